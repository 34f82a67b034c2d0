"""Make the redaction corpus: PII in realistic text, and look-alikes that must survive.

    .venv/bin/python tests/privacy/make_corpus.py      # rewrites tests/privacy/corpus.jsonl

Each line is one case: ``{"locale", "region", "kind", "text", "expected"}``. For PII cases
``expected`` is ``text`` with the PII replaced by its placeholder; for look-alikes
(``kind = "lookalike:<what>"``) it is ``text`` itself. Faker draws the names, addresses,
numbers and contexts per locale with fixed seeds, so the file is the same on every run.

Phone numbers: Faker fills its national formats with random digits, so many of its numbers
do not exist (US area code 591); a real person's number is a valid one, and the redactor
leaves invalid numbers alone by design. The corpus keeps the numbers libphonenumber calls
valid, in Faker's own national format and in international formats, some with extensions.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import random
import string
import uuid
from pathlib import Path
from urllib.parse import quote

import faker
import phonenumbers

from edgeloop.collector.redact import _IBAN_LENGTHS as IBAN_LENGTHS

OUT = Path(__file__).with_name("corpus.jsonl")

LOCALES = (
    "am_ET ar_AE ar_DZ ar_JO ar_PS az_AZ bn_BD bs_BA cs_CZ da_DK de_AT de_CH de_DE de_LU el_GR en_AU "
    "en_CA en_GB en_IN en_NZ en_PK en_US es_CL es_CO es_ES es_MX fa_IR fi_FI fr_FR he_IL hr_HR hu_HU hy_AM "
    "id_ID it_IT ja_JP ka_GE ko_KR lv_LV mk_MK ne_NP nl_NL no_NO pl_PL pt_BR pt_PT ro_RO ru_RU sk_SK "
    "sl_SI sv_SE th_TH tr_TR uk_UA vi_VN zh_CN zh_TW"
).split()
PER_LOCALE = {"phone": 40, "email": 16, "card": 12, "iban": 6, "ipv4": 4, "ipv6": 5, "mac": 4, "jwt": 2,
              "api_key": 3, "url_credentials": 3, "secret_param": 3, "ssn": 3, "nino": 3}  # fmt: skip
LOOKALIKES_PER_LOCALE = 90
PLACEHOLDER = {"phone": "<PHONE>", "email": "<EMAIL>", "card": "<CARD>", "iban": "<IBAN>", "ipv4": "<IPV4>",
               "ipv6": "<IPV6>", "mac": "<MAC>", "jwt": "<JWT>", "api_key": "<API_KEY>",
               "url_credentials": "<SECRET>", "secret_param": "<SECRET>", "ssn": "<SSN>", "nino": "<NINO>"}  # fmt: skip

# Where free text comes from in the field: each template takes the PII as {x}.
CONTEXTS = (
    "{ts} WARN pump-{n} operator note: {x} (retry {k})",
    "{ts} INFO session opened by {x}",
    "{n},{x},{reading}\n",
    "id,contact\n{n},{x}\n",
    '{{"note": "{x}", "rpm": {rpm}}}',
    '{{"contact":"{x}","shift":"{shift}"}}',
    "{name}: {x}",
    "{name} — {x}",
    "Kontakt {x} / Ref. {n}",
    "OCR: {company} {x} {city}",
    "{x}",
    "{x}.",
    "call back {x}, {name}",
    "[{shift}] {x}; temp {reading} C",
    "note=\"{x}\" severity=2",
    "{company}\t{x}\t{city}",
    "seen: {x}",
    "({x})",
)
URL_CONTEXTS = (
    "GET https://{host}/api/v2/devices?{param}={x}&lang={lang} 200",
    "redirect to https://{host}/login?next=%2Fhome&{param}={x}",
    "{ts} upstream https://{host}/hook?{param}={x}",
)


def jwt(rng: random.Random, fake: faker.Faker) -> str:
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    header = part({"alg": rng.choice(["HS256", "RS256", "ES256"]), "typ": "JWT"})
    payload = part({"sub": fake.user_name(), "iat": rng.randrange(1_700_000_000, 1_800_000_000)})
    signature = base64.urlsafe_b64encode(rng.randbytes(rng.choice([32, 64]))).rstrip(b"=").decode()
    return f"{header}.{payload}.{signature}"


def token(rng: random.Random, alphabet: str, length: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(length))


PERSONAL = frozenset({phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE,
                      phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE, phonenumbers.PhoneNumberType.VOIP,
                      phonenumbers.PhoneNumberType.PERSONAL_NUMBER})  # fmt: skip
ALNUM = string.ascii_letters + string.digits
UPPER = string.ascii_uppercase + string.digits


def api_key(rng: random.Random) -> str:
    kind = rng.randrange(10)
    if kind == 0:
        return rng.choice(["AKIA", "ASIA"]) + token(rng, UPPER, 16)
    if kind == 1:
        return rng.choice(["ghp_", "gho_", "ghs_"]) + token(rng, ALNUM, 36)
    if kind == 2:
        return "github_pat_" + token(rng, ALNUM, 22) + "_" + token(rng, ALNUM, 59)
    if kind == 3:
        return rng.choice(["sk_live_", "rk_live_", "sk_test_"]) + token(rng, ALNUM, rng.choice([24, 99]))
    if kind == 4:
        return rng.choice(["xoxb-", "xoxp-"]) + "-".join(token(rng, string.digits, 12) for _ in range(2)) + "-" + token(rng, ALNUM, 24)
    if kind == 5:
        return "AIza" + token(rng, ALNUM + "_-", 35)
    if kind == 6:
        return "glpat-" + token(rng, ALNUM + "_-", 20)
    if kind == 7:
        return "sk-proj-" + token(rng, ALNUM + "_-", 48)
    if kind == 8:
        return "SG." + token(rng, ALNUM + "_-", 22) + "." + token(rng, ALNUM + "_-", 43)
    return "npm_" + token(rng, ALNUM, 36)


def nino(rng: random.Random) -> str:
    first = rng.choice("ABCEGHJKLMNOPRSTWXYZ")
    second = rng.choice("ABCEGHJKLMNPRSTWXYZ")
    if first + second in {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}:
        first, second = "A", "B"
    digits = token(rng, string.digits, 6)
    suffix = rng.choice("ABCD")
    if rng.random() < 0.5:
        return f"{first}{second}{digits}{suffix}"
    return f"{first}{second} {digits[:2]} {digits[2:4]} {digits[4:]} {suffix}"


def ssn(rng: random.Random) -> str:
    while True:
        area, group, serial = rng.randrange(1, 900), rng.randrange(1, 100), rng.randrange(1, 10000)
        if area != 666:
            return f"{area:03d}-{group:02d}-{serial:04d}"


def card(rng: random.Random, fake: faker.Faker) -> str:
    types = sorted(fake.provider("faker.providers.credit_card").credit_card_types)
    while True:
        number = fake.credit_card_number(rng.choice(types))
        # Faker's JCB prefixes run 3500-3599 and its PROSTIR ones 9000-9999; the issuers use 3528-3589 and 9804.
        if not (number.startswith("35") and not 3528 <= int(number[:4]) <= 3589) and not (number[0] == "9" and number[:4] != "9804"):
            break
    style = rng.randrange(5)
    if style == 0 or len(number) not in (15, 16):
        return number
    if len(number) == 15:  # Amex: 4-6-5
        return f"{number[:4]} {number[4:10]} {number[10:]}"
    sep = [" ", "-", ".", " "][style - 1]
    return sep.join(number[i : i + 4] for i in range(0, 16, 4))


def maestro12(rng: random.Random) -> str:
    from edgeloop.collector.redact import luhn_ok

    while True:
        body = rng.choice(["6759", "5018", "6304", "5020"]) + token(rng, string.digits, 7)
        number = next(body + d for d in string.digits if luhn_ok(body + d))
        if not ean_ok(number):
            return number


def ean_ok(digits: str) -> bool:
    """The GS1 check digit of an EAN-13 / UPC-A barcode."""
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(reversed(digits[:-1]), start=1))
    return (10 - total % 10) % 10 == int(digits[-1])


def phone(rng: random.Random, fake: faker.Faker, region: str) -> str | None:
    for _ in range(60):
        raw = fake.phone_number()
        try:
            number = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            continue
        # Personal numbers only: a toll-free or premium-rate line is a business's, not a person's.
        if not phonenumbers.is_valid_number(number) or phonenumbers.number_type(number) not in PERSONAL:
            continue
        style = rng.randrange(10)
        if style < 5:
            return raw
        if style < 8:
            text = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
        elif style == 8:
            text = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        else:
            text = "00" + phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]
        if number.extension is None and rng.random() < 0.15:
            text += rng.choice([" x", "x", " ext. ", " ext "]) + str(rng.randrange(1, 9999))
        return text
    return None


def email(rng: random.Random, fake: faker.Faker) -> str:
    style = rng.randrange(4)
    if style == 0:
        return fake.email()
    if style == 1:
        return fake.company_email()
    # Names in the locale's own script: Unicode local parts (josé.núñez@...).
    local = ".".join(part.lower() for part in (fake.first_name(), fake.last_name())).replace(" ", "").replace("'", "")
    domain = fake.free_email_domain() if style == 2 else fake.domain_name()
    return f"{local}@{domain}"


def context(rng: random.Random, fake: faker.Faker, value: str, kind: str) -> tuple[str, str]:
    """``value`` in a realistic line; returns (text, expected)."""
    fill = {
        "ts": fake.date_time_between("-2y", "now").isoformat(timespec="milliseconds") + "Z",
        "n": rng.randrange(1, 99999),
        "k": rng.randrange(1, 9),
        "reading": f"{rng.uniform(-40, 120):.1f}",
        "rpm": rng.randrange(600, 3600),
        "shift": rng.choice(["early", "late", "night"]),
        "name": fake.name(),
        "company": fake.company(),
        "city": fake.city(),
        "host": fake.domain_name(),
        "lang": rng.choice(["de", "en", "fr", "pt-BR"]),
    }
    placeholder = PLACEHOLDER[kind]
    if kind == "secret_param":
        fill["param"] = rng.choice(["token", "access_token", "api_key", "password", "secret", "sig", "key", "code"])
        template = rng.choice(URL_CONTEXTS)
        return template.format(x=value, **fill), template.format(x=placeholder, **fill)
    if kind == "url_credentials":
        user, _, rest = value.partition("@")
        template = rng.choice(["{ts} sync to https://{x}/api", "DATABASE_URL=postgres://{x}/plant", "mirror ftp://{x}/pub ok"])
        host = fake.domain_name()
        return template.format(x=f"{user}@{host}", **fill), template.format(x=f"{placeholder}@{host}", **fill)
    if kind == "email" and rng.random() < 0.15:
        # URL-encoded in a query string.
        fill["param"] = "email"
        template = "GET https://{host}/unsubscribe?{param}={x}&lang={lang}"
        return template.format(x=quote(value, safe=""), **fill), template.format(x=placeholder, **fill)
    template = rng.choice(CONTEXTS)
    if kind in ("ipv6",) and rng.random() < 0.3:
        template = rng.choice(["addr:{x}", "peer={x} rtt=12ms", "client {x} refused"])
    return template.format(x=value, **fill), template.format(x=placeholder, **fill)


def pii_cases(locale: str, seed: int) -> list[dict]:
    region = locale.split("_")[1]
    rng = random.Random(seed)
    fake = faker.Faker(locale)
    fake.seed_instance(seed)
    english = faker.Faker("en_US")
    english.seed_instance(seed)
    german = faker.Faker("de_DE")
    german.seed_instance(seed)
    cases = []
    for kind, count in PER_LOCALE.items():
        for _ in range(count):
            if kind == "phone":
                value = phone(rng, fake, region)
                if value is None:
                    continue
            elif kind == "email":
                value = email(rng, fake)
            elif kind == "card":
                value = maestro12(rng) if rng.random() < 0.08 else card(rng, fake)
            elif kind == "iban":
                try:
                    value = fake.iban()
                except AttributeError:  # locales without a bank provider: a German IBAN
                    value = german.iban()
                if len(value) < 15:  # Faker makes up IBANs for countries outside the IBAN registry (TH)
                    value = german.iban()
                if rng.random() < 0.5:
                    value = " ".join(value[i : i + 4] for i in range(0, len(value), 4))
            elif kind == "ipv4":
                value = fake.ipv4_public() if rng.random() < 0.7 else fake.ipv4_private()
            elif kind == "ipv6":
                address = ipaddress.IPv6Address(fake.ipv6())
                value = rng.choice([address.compressed, address.exploded, str(address)])
            elif kind == "mac":
                value = fake.mac_address()
                style = rng.randrange(3)
                if style == 1:
                    value = value.upper().replace(":", "-")
                elif style == 2:
                    hexes = value.replace(":", "")
                    value = ".".join(hexes[i : i + 4] for i in range(0, 12, 4))
            elif kind == "jwt":
                value = jwt(rng, english)
            elif kind == "api_key":
                value = api_key(rng)
            elif kind == "url_credentials":
                value = f"{english.user_name()}:{token(rng, ALNUM + '!$*', rng.randrange(8, 20))}@"
            elif kind == "secret_param":
                value = token(rng, ALNUM + "-_.", rng.randrange(12, 40))
            elif kind == "ssn":
                value = ssn(rng)
            else:
                value = nino(rng)
            text, expected = context(rng, fake, value, kind)
            compact = value.replace(" ", "")
            if kind == "iban" and IBAN_LENGTHS.get(compact[:2]) != len(compact):
                # Faker's IBANs of some locales (GB of 21 characters, BD, CO) have no registry length: codes, not IBANs.
                cases.append({"locale": locale, "region": region, "kind": "lookalike:iban_shape", "text": text, "expected": text})
                continue
            cases.append({"locale": locale, "region": region, "kind": kind, "text": text, "expected": expected})
    return cases


def lookalike(rng: random.Random, fake: faker.Faker) -> tuple[str, str]:
    """One piece of telemetry that holds no PII but looks like numbers that might."""
    now = rng.randrange(1_600_000_000, 1_900_000_000)
    lat, lon = float(fake.latitude()), float(fake.longitude())
    what = rng.randrange(22)
    if what == 0:
        return "signed_decimal", f"pos {lat:+.6f},{lon:+.6f}"
    if what == 1:
        return "signed_decimal", f"offset {rng.uniform(-5000, 5000):+.3f} ms drift {rng.uniform(-1, 1):+.7f}"
    if what == 2:
        return "latlon", rng.choice([f"{lat:.6f}, {lon:.6f}", f"{lat:.6f} {lon:.6f}", f'{{"lat": {lat}, "lon": {lon}}}'])
    if what == 3:
        return "epoch_s", rng.choice([f"ts={now}", f'{{"ts": {now}, "v": 3}}', f"{now},{rng.uniform(0, 100):.2f}"])
    if what == 4:
        return "epoch_ms", rng.choice([f"ts={now}{rng.randrange(1000):03d}", f"t_ms {now}{rng.randrange(1000):03d} seq {rng.randrange(10**6)}"])
    if what == 5:
        return "epoch_us", f"t_us={now}{rng.randrange(10**6):06d}"
    if what == 6:
        return "uuid", rng.choice([f"request {uuid.UUID(int=rng.getrandbits(128), version=4)} done", f"batch_id={uuid.UUID(int=rng.getrandbits(128), version=4)}"])
    if what == 7:
        data = rng.randbytes(32)
        digest = rng.choice([hashlib.md5, hashlib.sha1, hashlib.sha256])(data).hexdigest()
        return "hash", rng.choice([f"sha {digest}", f"commit {digest[:12]} ({digest[:7]})", f"etag \"{digest}\""])
    if what == 8:
        return "semver", f"model v{rng.randrange(10)}.{rng.randrange(30)}.{rng.randrange(100)} firmware {rng.randrange(3)}.{rng.randrange(20)}.{rng.randrange(200)}-rc.{rng.randrange(9)}+build.{rng.randrange(9999)}"
    if what == 9:
        moment = fake.date_time_between("-5y", "+1y")
        return "date", rng.choice([moment.isoformat(), moment.strftime("%d.%m.%Y %H:%M"), moment.strftime("%m/%d/%Y"),
                                   moment.strftime("%Y/%m/%d %H:%M:%S"), moment.strftime("%d-%m-%Y"), moment.strftime("%Y%m%dT%H%M%SZ")])  # fmt: skip
    if what == 10:
        return "duration", rng.choice([f"took {rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}.{rng.randrange(1000):03d}",
                                       f"{rng.randrange(24)}h{rng.randrange(60)}m{rng.randrange(60)}s", f"PT{rng.randrange(24)}H{rng.randrange(60)}M",
                                       f"{rng.randrange(100000)} ms", f"uptime {rng.randrange(400)} days, {rng.randrange(24)}:{rng.randrange(60):02d}"])  # fmt: skip
    if what == 11:
        return "sku", rng.choice([f"SKU-{rng.randrange(10000):04d}-{rng.randrange(10000):04d}-{token(rng, string.ascii_uppercase, 2)}",
                                  f"part {token(rng, string.ascii_uppercase, 3)}{rng.randrange(10**6):06d}", f"P/N {rng.randrange(100):02d}-{rng.randrange(10**4):04d}-{token(rng, string.ascii_uppercase, 1)}",
                                  f"lot {fake.bothify('??####-###')}"])  # fmt: skip
    if what == 12:
        return "traceback", rng.choice([
            f'File "/usr/lib/python3.{rng.randrange(8, 14)}/site-packages/edge/pump.py", line {rng.randrange(1, 3000)}, in read_sensor',
            f"at com.acme.pump.Reader.read(Reader.java:{rng.randrange(1, 3000)})",
            f"Traceback (most recent call last): ValueError: reading {rng.uniform(0, 100):.4f} out of range [0, 50]",
        ])  # fmt: skip
    if what == 13:
        return "barcode", f"scanned {fake.ean13()}" if rng.random() < 0.7 else f"upc {fake.ean8()} {fake.ean13()}"
    if what == 14:
        return "reading", f"rpm={rng.randrange(600, 3600)} temp={rng.uniform(-20, 90):.1f} vib={rng.uniform(0, 5):.4f} count={rng.randrange(10**7)}"
    if what == 15:
        return "float", f"confidence {rng.random()!r} loss {rng.random() * 3!r}"
    if what == 16:
        return "version", rng.choice([f"python {rng.randrange(3, 4)}.{rng.randrange(8, 14)}.{rng.randrange(20)}", f"build {rng.randrange(2020, 2027)}.{rng.randrange(1, 13)}.{rng.randrange(1, 29)}"])
    if what == 17:
        return "counter", f"bytes_in={rng.randrange(10**9)} bytes_out={rng.randrange(10**12)} pkts={rng.randrange(10**8)}"
    if what == 18:
        return "time", f"shift {rng.randrange(24):02d}:{rng.randrange(60):02d}-{rng.randrange(24):02d}:{rng.randrange(60):02d} {fake.day_of_week()}"
    if what == 19:
        return "money", f"cost {rng.uniform(0, 99999):,.2f} EUR, {rng.randrange(1, 500)} units @ {rng.uniform(0, 99):.2f}"
    if what == 20:
        return "prose", fake.sentence(nb_words=rng.randrange(4, 12))
    return "config", f"retries={rng.randrange(10)} timeout_s={rng.randrange(1, 300)} port={rng.randrange(1024, 65536)} host=pump-{rng.randrange(999)}.local"


def lookalike_cases(locale: str, seed: int) -> list[dict]:
    region = locale.split("_")[1]
    rng = random.Random(seed)
    fake = faker.Faker(locale)
    fake.seed_instance(seed)
    cases = []
    for _ in range(LOOKALIKES_PER_LOCALE):
        what, text = lookalike(rng, fake)
        cases.append({"locale": locale, "region": region, "kind": f"lookalike:{what}", "text": text, "expected": text})
    return cases


# Written by hand from attacks on the redactor (locale, kind, text, expected): forms Faker never makes.
HAND = (
    ("de_DE", "iban", "iban: de89370400440532013000", "iban: <IBAN>"),
    ("de_DE", "iban", "IBAN de89 3704 0044 0532 0130 00 ok", "IBAN <IBAN> ok"),
    ("de_DE", "iban", "Konto De89 3704 0044 0532 0130 00", "Konto <IBAN>"),
    ("en_GB", "iban", "to gb82west12345698765432.", "to <IBAN>."),
    ("fr_FR", "iban", "pay fr14 2004 1010 0505 0001 3m02 606 now", "pay <IBAN> now"),
    ("nl_NL", "iban", "rekening nl91abna0417164300", "rekening <IBAN>"),
    ("en_US", "email", '"john smith"@example.com', "<EMAIL>"),
    ("en_US", "email", 'mail "john smith"@example.com now', "mail <EMAIL> now"),
    ("en_US", "email", 'to: "j.o\\"s"@example.org;', "to: <EMAIL>;"),
    ("en_US", "email", 'cc "first".last@example.com', "cc <EMAIL>"),
    ("en_US", "secret_param", "Basic dXNlcjpwYXNz", "Basic <SECRET>"),
    ("en_US", "secret_param", "hdr basic YTpi sent", "hdr basic <SECRET> sent"),
    ("en_US", "secret_param", "Authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l", "Authorization: Basic <SECRET>"),
    ("en_US", "mac", "time 12:34:56:78:90:12", "time <MAC>"),
    ("en_GB", "phone", "call 020 7946 0018", "call <PHONE>"),
    ("en_GB", "phone", "call 020 7946 0018 Kim", "call <PHONE> Kim"),
    ("de_DE", "phone", "030 1234567 12 ms", "<PHONE> 12 ms"),
    ("en_US", "card", "4111 1111 1111 1111 12/25", "<CARD> 12/25"),
    ("en_US", "lookalike:part_number", "part 1234-5678-9012-3456", None),
    ("en_US", "lookalike:part_number", "part 1234 5678 9012 3456", None),
    ("en_US", "lookalike:part_number", "sn 9999-078-05-1120", None),
    ("en_US", "lookalike:part_number", "ref 1111-4111-1111-1111-1111", None),
    ("en_GB", "lookalike:measurement", "took 1234567890 ns", None),
    ("en_IN", "lookalike:measurement", "took 1234567890 ns", None),
    ("pt_BR", "lookalike:measurement", "took 1234567890 ns", None),
    ("en_IN", "lookalike:measurement", "clock 1234567890 Hz", None),
    ("en_GB", "lookalike:measurement", "used 7912345678 KB", None),
    ("en_GB", "lookalike:measurement", "temp 7912345678 °C", None),
    ("en_GB", "lookalike:order_number", "order #123-456-7890", None),
    ("en_CA", "lookalike:order_number", "ticket #2025550143", None),
    ("en_US", "lookalike:prose", "Basic usage", None),
    ("en_US", "lookalike:prose", "Basic plan 2024", None),
    ("en_US", "lookalike:prose", "Basic info here", None),
    ("de_DE", "lookalike:iban_shape", "id de89370400440532013001", None),
    ("en_US", "lookalike:iban_shape", "commit ab12cd34ef56ab78cd90ef12ab34", None),
)


def hand_cases() -> list[dict]:
    return [{"locale": locale, "region": locale.split("_")[1], "kind": kind, "text": text,
             "expected": text if expected is None else expected} for locale, kind, text, expected in HAND]  # fmt: skip


def main() -> None:
    lines = []
    for index, locale in enumerate(LOCALES):
        for case in pii_cases(locale, 1000 + index) + lookalike_cases(locale, 5000 + index):
            lines.append(json.dumps(case, ensure_ascii=False))
    lines += [json.dumps(case, ensure_ascii=False) for case in hand_cases()]
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{OUT}: {len(lines)} cases, {OUT.stat().st_size:,} bytes, {len(LOCALES)} locales")


if __name__ == "__main__":
    main()
