"""The redact rule on values generated broadly: every kind README's privacy section claims, drawn by Faker in many
locales and by hypothesis, is replaced whole; the measurements a device logs (versions, units, ISO dates and times,
hex ids, sensor readings, coordinates, model names) are never rewritten."""

from __future__ import annotations

import base64
import datetime
import hashlib
import random
import re
import string
import uuid
from urllib.parse import quote

import faker
import phonenumbers
import pytest
from faker.config import AVAILABLE_LOCALES
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloop.collector.redact import _IBAN_LENGTHS, Redactor, card_ok, ean_ok

LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL", "pt_BR", "ja_JP", "ru_RU", "tr_TR",
           "en_IN", "zh_CN", "ar_AE", "sv_SE", "no_NO", "fi_FI", "da_DK", "cs_CZ", "uk_UA", "el_GR", "he_IL", "ko_KR",
           "en_AU", "de_CH", "hu_HU", "ro_RO", "th_TH", "vi_VN")  # fmt: skip
# Every locale Faker has (fr_QC is a deprecated alias of fr_CA), and the phone regions they name.
EVERY_LOCALE = tuple(locale for locale in AVAILABLE_LOCALES if locale != "fr_QC")
EVERY_REGION = tuple(sorted({
    locale.split("_")[1] for locale in EVERY_LOCALE
    if "_" in locale and phonenumbers.PhoneMetadata.metadata_for_region(locale.split("_")[1]) is not None
}))  # fmt: skip
CONTEXTS = ("{x}", "note: {x} (retry 2)", '{{"contact": "{x}", "rpm": 2977}}', "id,{x},43.8\n", "OCR: ACME {x} Berlin")
PER_KIND = 12


def nino(rng: random.Random) -> str:
    """A UK NINO HMRC could issue, in upper or lower case, spaced or not."""
    while True:
        prefix = rng.choice("ABCEGHJKLMNOPRSTWXYZ") + rng.choice("ABCEGHJKLMNPRSTWXYZ")
        if prefix not in {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}:
            break
    digits = "".join(rng.choice(string.digits) for _ in range(6))
    value = rng.choice([f"{prefix}{digits}{rng.choice('ABCD')}",
                        f"{prefix} {digits[:2]} {digits[2:4]} {digits[4:]} {rng.choice('ABCD')}"])  # fmt: skip
    return value.lower() if rng.random() < 0.5 else value


def ssn(rng: random.Random) -> str:
    """A US SSN the SSA could issue: area not 000, 666 or 9xx, group not 00, serial not 0000."""
    area = rng.choice([n for n in range(1, 900) if n != 666])
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def jwt(rng: random.Random) -> str:
    """A JSON Web Token: base64url header and claims, and a signature."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    claims = f'{{"sub":"{rng.getrandbits(32)}","exp":{rng.randint(10**9, 2 * 10**9)}}}'.encode()
    header = b64(b'{"alg":"HS256","typ":"JWT"}')
    return f"{header}.{b64(claims)}.{b64(rng.randbytes(32))}"


def api_key(rng: random.Random) -> str:
    """A key of a kind the README names: AWS key id, GitHub, Stripe, Slack, Google, OpenAI."""
    def chars(alphabet: str, n: int) -> str:
        return "".join(rng.choices(alphabet, k=n))

    alnum = string.ascii_letters + string.digits
    return rng.choice([
        "AKIA" + chars(string.ascii_uppercase + string.digits, 16), "ghp_" + chars(alnum, 36),
        "sk_live_" + chars(alnum, 24), "xoxb-" + chars(string.digits, 12) + "-" + chars(alnum, 24),
        "AIza" + chars(alnum + "_-", 35), "sk-proj-" + chars(alnum + "_-", 48),
    ])  # fmt: skip


def generated_pii(locale: str) -> list[tuple[str, str, str]]:
    """(kind, value, placeholder) drawn by Faker in ``locale``: each value one a person or a system would write."""
    fake = faker.Faker(locale)
    fake.seed_instance(locale)
    rng = random.Random(locale)
    region = locale.split("_")[1]
    values: list[tuple[str, str, str]] = []
    for _ in range(PER_KIND):
        values += [("email", fake.email(), "<EMAIL>"), ("email", fake.free_email(), "<EMAIL>"),
                   ("ipv4", fake.ipv4_public(), "<IPV4>"), ("ipv6", fake.ipv6(), "<IPV6>"),
                   ("mac", fake.mac_address(), "<MAC>"), ("nino", nino(rng), "<NINO>")]  # fmt: skip
        values += [("ssn", ssn(rng), "<SSN>"), ("jwt", jwt(rng), "<JWT>"), ("api_key", api_key(rng), "<API_KEY>")]
        number = fake.credit_card_number()
        if card_ok(number) and len(number) != 13:  # Faker's JCB 3500-3527 are no issuer's; 13 digits may be EANs
            values.append(("card", number, "<CARD>"))
        try:
            iban = fake.iban()
        except AttributeError:
            iban = ""
        if _IBAN_LENGTHS.get(iban[:2]) == len(iban):  # Faker makes up IBANs for some countries outside the registry
            values.append(("iban", rng.choice([iban, iban.lower(), " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))]), "<IBAN>"))
        phone = fake.phone_number()
        try:
            valid = phonenumbers.is_valid_number(phonenumbers.parse(phone, region))
        except phonenumbers.NumberParseException:
            valid = False
        digits = sum(char.isdigit() for char in phone)
        # The README's limits: a bare run of 10 or 13 digits opening with 1 is an epoch time unless a phone word names it.
        epoch = phone.isdigit() and len(phone) in (10, 13) and phone[0] == "1"
        if valid and digits >= 7 and not epoch:
            values.append(("phone", phone, "<PHONE>"))
    return values


@pytest.mark.parametrize("locale", LOCALES)
def test_faker_values_of_every_kind_are_replaced_whole_in_many_locales(locale):
    """Faker's e-mails, IPs, MACs, cards, IBANs, valid phones (bare ones as the locale writes them too) and NINOs of a
    locale, and generated SSNs, JWTs and API keys, become their placeholder whole, with the text around them intact, in every context a device logs them in."""
    redactor = Redactor(regions=[locale.split("_")[1]])
    rng = random.Random(locale)
    missed = []
    for kind, value, placeholder in generated_pii(locale):
        context = rng.choice(CONTEXTS)
        text, expected = context.format(x=value), context.format(x=placeholder)
        if redactor.redact(text) != expected:
            missed.append((kind, text, redactor.redact(text)))
    assert missed == []


SECRET_CHARS = string.ascii_letters + string.digits + "!#$%&()*+,-./:;<=>?@[]^_{|}~"


@settings(max_examples=300, deadline=None)
@given(password=st.text(SECRET_CHARS, min_size=1, max_size=24).filter(
           lambda p: p[0] not in "&,;<>=" and p[-1] not in "&,;" and "</" not in p and any(c.isalnum() for c in p)),
       name=st.sampled_from(["password", "passwd", "api_key", "client_secret", "Password", "access_token"]))  # fmt: skip
def test_no_character_of_a_generated_password_is_left(password, name):
    """Every character of a generated password (symbols, "<" and ">" included: no markup is around it) is replaced: in
    key=value, quoted, after a colon, in a URL, and as the text of an element named after it."""
    for before, after in ((f"{name}=", " user=bob"), (f'{name}="', '" user=bob'), (f"{name}: ", " host: db1")):
        out = Redactor().redact(before + password + after)
        if "=" in password or ":" in password:  # "pwd=a=b" and "pwd: a:b" are still secrets, maybe cut at the second
            assert "<SECRET>" in out
        else:
            assert out == before + "<SECRET>" + after
    if "<" not in password:
        assert Redactor().redact(f"<{name}>{password}</{name}>") == f"<{name}><SECRET></{name}>"
    if "@" not in password and ":" not in password and "/" not in password and "?" not in password:
        url = f"https://bob:{password}@db.example:5432/x"
        assert Redactor().redact(url) == "https://<SECRET>@db.example:5432/x"


def measurements(rng: random.Random) -> list[str]:
    """Strings a device logs that hold no person: versions, units, ISO dates and times, hex ids, readings, coordinates,
    model names, durations, hashes and serial numbers."""
    moment = datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(seconds=rng.randint(0, 10**9))
    dotted = ".".join(str(rng.randint(0, 2099 if i == 0 else 999)) for i in range(rng.randint(2, 4)))
    value = rng.choice([f"{rng.uniform(0, 100000):.{rng.randint(0, 4)}f}", str(rng.randint(0, 10**10))])
    lat, lon = rng.uniform(-90, 90), rng.uniform(-180, 180)
    return [
        rng.choice(["v{}", "version {}", "fw {}", "firmware: {}", "release {}", "{}-rc1", "{}+cu121", "{}.dev0"]).format(dotted),
        rng.choice(["{} kg", "{} °C", "{} mm", "{} ms", "{} Hz", "{} kPa", "{} V", "{} mAh", "{}%", "{} rpm", "{} lux",
                    "{} dB", "{} ppm", "{} kWh", "{} bar", "{} psi", "{} µs", "{} GB", "{} N·m", "{} Ω"]).format(value),
        rng.choice([moment.isoformat(), moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), moment.strftime("%Y%m%dT%H%M%SZ"),
                    moment.strftime("%Y-%m-%d %H:%M:%S"), moment.strftime("%d.%m.%Y %H:%M"), moment.strftime("%H:%M:%S.%f")]),
        rng.choice([uuid.UUID(int=rng.getrandbits(128)).hex, str(uuid.UUID(int=rng.getrandbits(128))),
                    f"{rng.getrandbits(160):040x}", f"0x{rng.getrandbits(32):08x}", f"req-{rng.getrandbits(48):012x}"]),
        rng.choice(["temp={:.2f}", "rpm={:.0f}", "vib_rms={:.4f}", "seq={:.0f}", "pkts={:.0f}"]).format(rng.uniform(0, 10**9)),
        rng.choice([f"{lat:.6f},{lon:.6f}", f"lat {lat:.7f} lon {lon:.7f}", f"POINT({lon:.6f} {lat:.6f})"]),
        rng.choice(["resnet50-v2.1", "yolov8n-1280", "efficientnet-b3_int8", "mobilenet_v3_large_1.0_224",
                    "llama-3.1-8b-q4_k_m", "ssd_mobilenet_v2_320x320_coco17", "det-v4.12.3+build.567", "sam2.1_hiera_l"]),
        rng.choice([f"took {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 999):03d}",
                    f"PT{rng.randint(0, 99)}H{rng.randint(0, 59)}M{rng.randint(0, 59)}S", f"{rng.randint(0, 99)}h{rng.randint(0, 59)}m{rng.randint(0, 59)}s",
                    f"uptime {rng.randint(0, 999)} days, {rng.randint(0, 23)}:{rng.randint(0, 59):02d}", f"{rng.randint(0, 10**10)} ms"]),
        rng.choice([hashlib.md5(rng.randbytes(8)).hexdigest(), "sha256:" + hashlib.sha256(rng.randbytes(8)).hexdigest(),
                    hashlib.sha1(rng.randbytes(8)).hexdigest()[:12]]),
        rng.choice([f"SN: {rng.choice(string.ascii_uppercase)}{rng.randint(10**8, 10**10)}", f"S/N {rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}-{rng.randint(10, 99)}",
                    f"serial={rng.randint(10**9, 10**12)}", f"serial {''.join(rng.choices(string.ascii_uppercase + string.digits, k=12))}"]),
        rng.choice(["{} dB", "{} dBm", "{}%", "{} rpm", "{} lux", "{} °C", "{} kg"]).format(rng.randint(10**6, 10**10)),
    ]  # fmt: skip


@pytest.mark.parametrize("region", ["US", "GB", "DE", "FR", "IN", "BR", "JP", "CN", "SE", "PL", "ES", "CH", "AM", "NO"])
def test_generated_measurements_are_never_rewritten(region):
    """Versions (named or suffixed), numbers before units, ISO dates and times, hex ids, key=value readings,
    coordinates, model names, durations, hashes and serial numbers stay exactly as they are, in every declared region."""
    redactor = Redactor(regions=[region])
    rng = random.Random(region)
    changed = []
    for _ in range(150):
        for text in measurements(rng):
            for context in ("{x}", "value {x} ok", '{{"v": "{x}"}}'):
                sample = context.format(x=text)
                if redactor.redact(sample) != sample:
                    changed.append((sample, redactor.redact(sample)))
    assert changed == []


def counts(rng: random.Random) -> list[str]:
    """Numbers a device logs that libphonenumber may call valid somewhere: counts with thousands dots (not an IPv4's
    shape), epoch seconds and milliseconds of 2001-2033, bare counts that open with no trunk prefix, and counts with
    thousands spaces."""
    while True:
        dotted = f"{rng.randint(10**6, 10**12):,}".replace(",", ".")
        if not (dotted.count(".") == 3 and all(int(part) <= 255 for part in dotted.split("."))):
            break
    seconds = rng.randint(10**9, 2 * 10**9 - 1)
    while card_ok(count := str(rng.randint(10**6, 10**12))):  # Luhn and an issuer's range: a card (12 digits: Maestro)
        pass
    spaced = f"{rng.randint(10**5, 10**11):,}".replace(",", rng.choice([" ", "\u00a0"]))
    return [dotted, str(seconds), f"{seconds}{rng.randint(0, 999):03d}", count, spaced]


@pytest.mark.parametrize("region", ["DE", "SE", "GB", "FR", "JP", "CH", "AT", "NL", "AU", "FI"])
def test_generated_counts_in_regions_that_write_a_trunk_prefix_are_never_rewritten(region):
    """In a country whose national numbers are written with a trunk prefix (0...), a thousands-dotted or -spaced count,
    an epoch time, or a bare count without that prefix stays as it is where no phone word names it."""
    redactor = Redactor(regions=[region])
    rng = random.Random(region)
    changed = []
    for _ in range(300):
        for text in counts(rng):
            for context in ("{x}", "value {x} ok", "id,{x},43.8\n", "counter {x}", '{{"n": "{x}"}}'):
                sample = context.format(x=text)
                if redactor.redact(sample) != sample:
                    changed.append((sample, redactor.redact(sample)))
    assert changed == []


@pytest.mark.parametrize("region", ["US", "CN", "IN", "BR", "PL", "ES", "NO", "IT", "RU", "KR", "TR", "MX"])
def test_generated_dotted_counts_and_epochs_are_never_rewritten_anywhere(region):
    """Thousands-dotted counts and epoch seconds and milliseconds stay as they are in every region, also in those
    whose bare national numbers are phones as they stand."""
    redactor = Redactor(regions=[region])
    rng = random.Random(region)
    changed = []
    for _ in range(300):
        for text in counts(rng)[:3]:
            for context in ("{x}", "value {x} ok", "id,{x},43.8\n"):
                sample = context.format(x=text)
                if redactor.redact(sample) != sample:
                    changed.append((sample, redactor.redact(sample)))
    assert changed == []


@pytest.mark.parametrize("locale", LOCALES)
def test_faker_emails_url_encoded_up_to_three_times_are_replaced_whole(locale):
    """A Faker e-mail of any locale, URL-encoded once, twice or three times (%40, %2540, %252540) in a query string, is
    one <EMAIL> with the parameters around it intact."""
    fake = faker.Faker(locale)
    fake.seed_instance(locale)
    rng = random.Random(locale)
    missed = []
    for _ in range(PER_KIND):
        value = rng.choice([fake.email(), fake.free_email(), f"{fake.first_name()}.{fake.last_name()}@{fake.domain_name()}".lower()])
        encoded = value.replace(" ", "")
        for _ in range(rng.randint(1, 3)):
            encoded = quote(encoded, safe="")
        text = f"GET https://x.example/u?email={encoded}&lang=de"
        if Redactor().redact(text) != "GET https://x.example/u?email=<EMAIL>&lang=de":
            missed.append((value, text, Redactor().redact(text)))
    assert missed == []


DECIMAL_SHAPED = re.compile(r"\d{1,4}\.\d{4,9}")


def every_kind(locale: str, per_kind: int) -> list[tuple[str, str, str]]:
    """(kind, value, placeholder): Faker's phones, cards, e-mails, IPs and IBANs of ``locale``, and SSNs in en_US, less
    what README's privacy section says stays (bare epoch-shaped phones, 13-digit cards)."""
    fake = faker.Faker(locale)
    fake.seed_instance(locale)
    region = locale.split("_")[1] if "_" in locale else None
    values: list[tuple[str, str, str]] = []
    for _ in range(per_kind):
        values += [("email", fake.email(), "<EMAIL>"), ("ipv4", fake.ipv4_public(), "<IPV4>"), ("ipv6", fake.ipv6(), "<IPV6>")]
        if locale == "en_US":
            values.append(("ssn", fake.ssn(), "<SSN>"))
        number = fake.credit_card_number()
        if card_ok(number) and len(number) != 13:
            values.append(("card", number, "<CARD>"))
        iban = fake.iban() if hasattr(fake, "iban") else ""
        if _IBAN_LENGTHS.get(iban[:2]) == len(iban):
            values.append(("iban", iban, "<IBAN>"))
        try:
            phone = fake.phone_number()
            valid = region is not None and phonenumbers.is_valid_number(phonenumbers.parse(phone, region))
        except (AttributeError, phonenumbers.NumberParseException):  # Faker has no phones for en_PH, fil_PH, tl_PH
            phone, valid = "", False
        epoch = phone.isdigit() and len(phone) in (10, 13) and phone[0] == "1"
        decimal = DECIMAL_SHAPED.fullmatch(phone) is not None  # Armenia's 265.96390: a phone only where a phone word names it
        if valid and sum(char.isdigit() for char in phone) >= 7 and not epoch and not decimal:
            values.append(("phone", phone, "<PHONE>"))
    return values


@pytest.mark.parametrize("locale", EVERY_LOCALE)
def test_faker_values_of_every_locale_faker_has_are_replaced_whole(locale):
    """Faker's phones, cards, e-mails, IPv4s, IPv6s and IBANs in every locale Faker has (SSNs in en_US) become their
    placeholder whole, with the text around them intact, in the contexts a device logs them in."""
    region = locale.split("_")[1] if "_" in locale else None
    redactor = Redactor(regions=[region] if region in EVERY_REGION else [])
    rng = random.Random(locale)
    missed = []
    for kind, value, placeholder in every_kind(locale, 6):
        context = rng.choice(CONTEXTS)
        text, expected = context.format(x=value), context.format(x=placeholder)
        if redactor.redact(text) != expected:
            missed.append((kind, text, redactor.redact(text)))
    assert missed == []


def with_check_digit(digits: str) -> str:
    """``digits`` and the GS1 check digit that makes them a barcode."""
    total = sum((ord(d) - 48) * (3 if i % 2 else 1) for i, d in enumerate(reversed(digits), start=1))
    return digits + str((10 - total % 10) % 10)


def look_alikes(rng: random.Random) -> list[str]:
    """More of what a device logs that holds no person: barcodes, semantic versions, readings with thousands dots, ids
    and counters after their labels, ISO durations."""
    while card_ok(ean := with_check_digit(str(rng.randint(10**11, 10**12 - 1)))):
        pass
    assert ean_ok(ean)
    return [
        ean, f"EAN {with_check_digit(str(rng.randint(10**6, 10**7 - 1)))}", f"{rng.randint(0, 25)}.{rng.randint(0, 25)}.{rng.randint(0, 999)}",
        f"{rng.randint(1, 99)}.{rng.randint(100, 999)}.{rng.randint(100, 999)}", f"{rng.uniform(-50, 50):.{rng.randint(1, 6)}f} °C",
        f"id: {rng.randint(10**6, 10**9)}", f"device_id={rng.randint(10**6, 10**12)}", f"seq {rng.randint(10**6, 10**10)}",
        f"P{rng.randint(0, 9)}DT{rng.randint(0, 23)}H{rng.randint(0, 59)}M", f"{rng.randint(10**5, 10**9)} bytes",
    ]  # fmt: skip


@pytest.mark.parametrize("region", EVERY_REGION)
def test_generated_measurements_are_never_rewritten_in_any_region_faker_has(region):
    """Measurements, counts, barcodes, versions and labelled ids stay exactly as they are in every region of Faker's locales."""
    redactor = Redactor(regions=[region])
    rng = random.Random(region)
    changed = []
    for _ in range(25):
        for text in measurements(rng) + counts(rng)[:3] + look_alikes(rng):
            for context in ("{x}", "value {x} ok", '{{"v": "{x}"}}'):
                sample = context.format(x=text)
                if redactor.redact(sample) != sample:
                    changed.append((sample, redactor.redact(sample)))
    assert changed == []
