"""The redact rule on text nobody here wrote: the Faker corpus in 57 locales, the issue's own
examples, and each kind with its validity rules."""

from __future__ import annotations

import json
import re
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloop.collector import redact as redact_module
from edgeloop.collector.redact import IBAN_REGISTRY, CustomPattern, Redactor, card_ok, nino_ok, ssn_ok

CORPUS = Path(__file__).resolve().parent.parent / "privacy" / "corpus.jsonl"
CASES = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]
MIN_RECALL = 0.99


def run_corpus() -> tuple[Counter[str], Counter[str], list[tuple[str, str, str]]]:
    """Each case through a redactor declaring the case's own region; (cases, exact, failures) by kind."""
    redactors: dict[str, Redactor] = {}
    total: Counter[str] = Counter()
    exact: Counter[str] = Counter()
    failures = []
    for case in CASES:
        redactor = redactors.get(case["region"]) or redactors.setdefault(case["region"], Redactor(regions=[case["region"]]))
        out = redactor.redact(case["text"])
        total[case["kind"]] += 1
        if out == case["expected"]:
            exact[case["kind"]] += 1
        else:
            failures.append((case["kind"], case["text"], out))
    return total, exact, failures


@pytest.fixture(scope="module")
def corpus_result():
    return run_corpus()


def test_corpus_is_broad():
    """The corpus covers 40+ locales, every covered kind, and thousands of look-alikes."""
    kinds = Counter(case["kind"].split(":")[0] for case in CASES)
    assert len({case["locale"] for case in CASES}) >= 40
    assert kinds["lookalike"] >= 3000
    assert {"phone", "email", "card", "iban", "ipv4", "ipv6", "mac", "jwt", "api_key", "url_credentials",
            "secret_param", "ssn", "nino"} <= set(kinds)  # fmt: skip


def test_recall_per_kind_is_at_least_99_percent(corpus_result):
    """Every covered kind is replaced, exactly and with the text around it intact, in >= 99% of the corpus cases."""
    total, exact, failures = corpus_result
    recall = {kind: exact[kind] / count for kind, count in total.items() if not kind.startswith("lookalike")}
    low = {kind: round(value, 4) for kind, value in recall.items() if value < MIN_RECALL}
    assert low == {}, [f for f in failures if f[0] in low][:10]


def test_no_lookalike_is_altered(corpus_result):
    """No signed decimal, coordinate, epoch, UUID, hash, version, date, duration, SKU, barcode or traceback changes."""
    _, _, failures = corpus_result
    altered = [failure for failure in failures if failure[0].startswith("lookalike")]
    assert altered == []


# Every example string of issue 10's bullet list, with the region its format belongs to.
ISSUE_PHONES = [
    ("849-224-3775x0122", ["US"]),
    ("+1-202-555-0143x12", []),
    ("044 668 18 00", ["CH"]),
    ("08-96 80 43", ["SE"]),
    ("05418/63850886", ["DE"]),
    ("(029)2018696", ["ID"]),
    ("8 (495) 123-45-67", ["RU"]),
    ("(+30) 6936 088357", []),
    ("74 4921-1151", ["BR"]),
    ("697 973 861", ["ES"]),
]


@pytest.mark.parametrize(("phone", "regions"), ISSUE_PHONES)
def test_issue_phone_examples_are_redacted_whole(phone, regions):
    """Each phone from the issue, extensions and brackets included, becomes one <PHONE> with nothing of it left."""
    assert Redactor(regions=regions).redact(f"call {phone} now") == "call <PHONE> now"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("id,card\n17,4111111111111111", "id,card\n17,<CARD>"),
        ("Card No.4111111111111111", "Card No.<CARD>"),
        ("4111.1111.1111.1111", "<CARD>"),
        ("maestro 675964982648", "maestro <CARD>"),  # 12 digits
        ("josé.núñez@correo.es", "<EMAIL>"),
        ("?email=jane%40x.com", "?email=<EMAIL>"),
        ("addr:2001:db8::1", "addr:<IPV6>"),
        ("source=operator jane.roe@plant.example.com", "source=operator <EMAIL>"),
    ],
)
def test_issue_card_email_ip_examples(text, expected):
    """Cards after a comma or period, dotted and 12-digit cards, Unicode and URL-encoded e-mails, IPv6 after a colon."""
    assert Redactor().redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "pos +48.856613,+2.352222",
        "offset +1234.567 ms",
        "ts=1764151755139",
        "ts=1764151755",
        "t_us=1764151755139123",
        "id 550e8400-e29b-41d4-a716-446655440000",
        "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "v1.24.3 build 2026.11.26",
        "2026-11-26T06:17:31.512+01:00 took 00:01:23.456",
    ],
)
def test_issue_lookalikes_survive_in_every_region(text):
    """The issue's corrupted look-alikes survive unchanged, whatever regions the device declares."""
    assert Redactor(regions=["DE", "FR", "PL", "US", "ES", "IT", "DK", "IN", "CN"]).redact(text) == text


def test_every_luhn_epoch_millisecond_survives():
    """No epoch millisecond of the next years becomes a card, though a tenth of them pass Luhn."""
    redactor = Redactor(regions=["US", "DE"])
    for ms in range(1_764_151_755_000, 1_764_151_755_000 + 3_000_000_000, 9_999_991):
        assert redactor.redact(f"ts={ms}") == f"ts={ms}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mac 00:1a:2b:3c:4d:5e up", "mac <MAC> up"),
        ("mac 00-1A-2B-3C-4D-5E", "mac <MAC>"),
        ("mac 001a.2b3c.4d5e", "mac <MAC>"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "jwt <JWT>"),
        ("aws AKIAIOSFODNN7EXAMPLE", "aws <API_KEY>"),
        ("gh ghp_" + "a1B2" * 9, "gh <API_KEY>"),
        ("stripe sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc", "stripe <API_KEY>"),
        ("slack xoxb-123456789012-123456789012-abcdefghijABCDEFGHIJklmn", "slack <API_KEY>"),
        ("google AIzaSyD-" + "x" * 31, "google <API_KEY>"),
        ("postgres://app:s3cr3t@db.internal:5432/plant", "postgres://<SECRET>@db.internal:5432/plant"),
        ("GET /cb?token=abc123XYZ&lang=de", "GET /cb?token=<SECRET>&lang=de"),
        ("password=hunter22 user=bob", "password=<SECRET> user=bob"),
        ('{"api_key": "k-123456"}', '{"api_key": "<SECRET>"}'),
        ("Authorization: Bearer abcdefghijklmnop1234", "Authorization: Bearer <SECRET>"),
        ("Authorization: Bearer mF_9.B5f-4.1JqM", "Authorization: Bearer <SECRET>"),  # RFC 6750's example
        ("authorization: bearer abc.def-ghi_jkl_mno", "authorization: bearer <SECRET>"),
        ("curl -H 'Authorization: Bearer tok3n_abc'", "curl -H 'Authorization: Bearer <SECRET>'"),
        ("password: hunter2 user: bob", "password: <SECRET> user: bob"),
        ("X-Api-Key: 0123456789abcdef0123", "X-Api-Key: <SECRET>"),
        ("db:\n  passwd:  s3cr3t!\n  host: db1", "db:\n  passwd:  <SECRET>\n  host: db1"),
        ("client_secret: 'zz-top'", "client_secret: '<SECRET>'"),
        ("ssn 123-45-6789", "ssn <SSN>"),
        ("nino AB 12 34 56 C and QQ123456C", "nino <NINO> and QQ123456C"),
    ],
)
def test_new_kinds(text, expected):
    """MAC addresses, JWTs, API keys, URL credentials, secret parameters, SSNs and NINOs get their placeholders."""
    assert Redactor().redact(text) == expected


@pytest.mark.parametrize("ssn", ["000-12-3456", "666-12-3456", "912-12-3456", "123-00-4567", "123-45-0000"])
def test_invalid_ssns_are_kept(ssn):
    """An SSN with area 000, 666 or 9xx, group 00 or serial 0000 is not one (and not redacted)."""
    assert not ssn_ok(*ssn.split("-"))
    assert Redactor().redact(f"ref {ssn}") == f"ref {ssn}"


@pytest.mark.parametrize("prefix", ["DA", "FA", "QA", "AO", "BG", "GB", "NK", "KN", "TN", "NT", "ZZ"])
def test_invalid_nino_prefixes_are_kept(prefix):
    """A NINO prefix HMRC never issues is not one (and not redacted)."""
    assert not nino_ok(prefix)
    assert Redactor().redact(f"ref {prefix}123456A") == f"ref {prefix}123456A"


def test_cards_need_a_real_issuer_and_length():
    """Luhn alone is not a card: the issuer range and its lengths must match too."""
    assert card_ok("4111111111111111") and card_ok("378282246310005") and card_ok("6759649826438453")
    assert not card_ok("1764151755139")  # an epoch millisecond passing Luhn
    assert not card_ok("9111111111111111" if not card_ok("9111111111111111") else "0")
    assert not card_ok("411111111111111")  # Visa has no 15-digit cards


def test_custom_patterns_and_allow_list():
    """A custom pattern replaces its matches (passing its validator); the allow-list keeps what it matches."""
    employee = CustomPattern("employee_id", re.compile(r"\bEMP-\d{6}\b"), "<EMPLOYEE>")
    luhn_id = CustomPattern("member", re.compile(r"\bM\d{8}\b"), "<MEMBER>", validator="luhn")
    redactor = Redactor(patterns=[employee, luhn_id], allow=[re.compile(r"\bsupport@acme\.example\b")])
    assert redactor.redact("EMP-004211 and M12345674 M12345675") == "<EMPLOYEE> and <MEMBER> M12345675"
    assert redactor.redact("mail support@acme.example or jo@acme.example") == "mail support@acme.example or <EMAIL>"


def test_detector_spans_become_placeholders():
    """A model-based detector's spans are replaced by <LABEL>, and a span outside the text is an error."""

    def names(text: str):
        start = text.find("Jane Roe")
        return [] if start < 0 else [(start, start + 8, "person")]

    assert Redactor(detector=names).redact("Jane Roe called") == "<PERSON> called"
    with pytest.raises(ValueError, match="outside"):
        Redactor(detector=lambda text: [(0, 99, "x")]).redact("short")



@contextmanager
def every_branch_tried():
    """The redactor with its pre-screens off: every kind's regex branch tried on every text."""
    with pytest.MonkeyPatch.context() as patch:
        # The compiled build (what Redactor is where it was built) looks its module's globals up as Python does.
        for module in filter(None, (redact_module, redact_module._fast)):
            patch.setattr(module, "_token_mask", lambda text, has_digit: (1 << 7) - 1)
            patch.setattr(module, "_lookalike_mask", lambda text: (1 << 7) - 1)
            patch.setattr(module, "_ipv6_possible", lambda text: True)
        yield


def test_prescreens_keep_every_corpus_answer():
    """On every corpus case the cheap checks that skip regex branches give the answer of trying them all."""
    redactors = {region: Redactor(regions=[region]) for region in {case["region"] for case in CASES}}
    fast = [redactors[case["region"]].redact(case["text"]) for case in CASES]
    redactors = {region: Redactor(regions=[region]) for region in redactors}
    with every_branch_tried():
        full = [redactors[case["region"]].redact(case["text"]) for case in CASES]
    assert [(case["text"], a, b) for case, a, b in zip(CASES, fast, full, strict=True) if a != b] == []


SPLICE_CHARS = "0123456789 +-().:/@=_%#§xeyJAKIAGBDEabcdef\n\"'"


@st.composite
def spliced_texts(draw: st.DrawFn) -> tuple[str, str]:
    """A corpus case's head, a few characters that numbers, keys and addresses are made of, another case's tail."""
    head, tail = draw(st.sampled_from(CASES)), draw(st.sampled_from(CASES))
    cut_head = draw(st.integers(0, len(head["text"])))
    cut_tail = draw(st.integers(0, len(tail["text"])))
    middle = draw(st.text(alphabet=SPLICE_CHARS, max_size=10))
    return head["region"], head["text"][:cut_head] + middle + tail["text"][cut_tail:]


@settings(max_examples=200, deadline=None)
@given(spliced=spliced_texts())
def test_prescreens_never_change_an_answer(spliced):
    """On corpus texts cut and spliced around stray characters, the pre-screens change no answer either."""
    region, text = spliced
    fast = Redactor(regions=[region]).redact(text)
    with every_branch_tried():
        assert Redactor(regions=[region]).redact(text) == fast


def test_repeated_texts_are_searched_once_and_memory_is_bounded():
    """A short text seen lately gets the same answer without a second search; the memory stays bounded and skips long texts."""
    searched = []

    class Counting(Redactor):
        def find(self, text):
            searched.append(text)
            return super().find(text)

    redactor = Counting(regions=["DE"])
    text = "ruf an: +49 30 901820, mail jane@x.de"
    first = redactor.redact(text)
    assert redactor.redact(text) == first == "ruf an: <PHONE>, mail <EMAIL>" and searched == [text]
    long = "jane@x.de " * 40
    redactor.redact(long), redactor.redact(long)
    assert searched.count(long) == 2
    for i in range(redact_module._MEMO_TEXTS + 10):
        redactor.redact(f"note {i}")
    assert len(redactor._texts) <= redact_module._MEMO_TEXTS
    with_detector = Counting(detector=lambda t: [])
    with_detector.redact(text), with_detector.redact(text)
    assert searched.count(text) == 3


def _libphonenumber_valid(code: int, national: str) -> bool:
    number = phonenumbers.PhoneNumber(country_code=code, national_number=int(national))
    zeros = len(national) - len(national.lstrip("0"))
    if zeros and zeros < len(national):
        number.italian_leading_zero, number.number_of_leading_zeros = True, zeros
    assert phonenumbers.national_significant_number(number) == national
    return phonenumbers.is_valid_number(number)


def _example_numbers() -> list[tuple[int, str]]:
    """Each region's example number of each type, and each one a digit longer, shorter and with its last digit changed."""
    examples = set()
    for region in phonenumbers.SUPPORTED_REGIONS:
        for kind in phonenumbers.PhoneNumberType.values():
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None:
                examples.add((number.country_code, phonenumbers.national_significant_number(number)))
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        number = phonenumbers.example_number_for_non_geo_entity(code)
        if number is not None:
            examples.add((code, phonenumbers.national_significant_number(number)))
    variants = set(examples)
    for code, national in examples:
        variants |= {(code, national + "5"), (code, national[:-1]), (code, national[:-1] + str((int(national[-1]) + 3) % 10))}
    return sorted((code, national) for code, national in variants if national.strip("0"))


def test_phone_validity_is_libphonenumbers_on_every_example():
    """The one-regex validity check agrees with phonenumbers.is_valid_number on every region's examples and near misses."""
    examples = _example_numbers()
    assert len(examples) > 3000
    disagree = [(c, n) for c, n in examples if redact_module._valid_number(c, n) != _libphonenumber_valid(c, n)]
    assert disagree == []
    assert sum(redact_module._valid_number(c, n) for c, n in examples) > 1000  # the valid side is exercised too


@settings(max_examples=300, deadline=None)
@given(
    code=st.sampled_from(sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)),
    national=st.text("0123456789", min_size=1, max_size=17).filter(lambda digits: digits.strip("0")),
)
def test_phone_validity_is_libphonenumbers_on_any_digits(code, national):
    """On any country code and national digits the one-regex validity check and phonenumbers.is_valid_number agree."""
    assert redact_module._valid_number(code, national) == _libphonenumber_valid(code, national)


def _card_by_scan(digits: str) -> bool:
    """card_ok's definition read straight off the issuer tables."""
    table = redact_module._SHORT_IINS if len(digits) <= 13 else redact_module._IIN_RANGES
    return 12 <= len(digits) <= 19 and redact_module.luhn_ok(digits) and any(
        len(digits) in lengths and low <= digits[: len(low)] <= high for low, high, lengths in table
    )


ISSUER_PREFIXES = sorted({low for low, _, _ in redact_module._IIN_RANGES + redact_module._SHORT_IINS}
                         | {high for _, high, _ in redact_module._IIN_RANGES + redact_module._SHORT_IINS})  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(prefix=st.sampled_from(["", *ISSUER_PREFIXES]), rest=st.text("0123456789", min_size=8, max_size=20))
def test_card_lookup_is_the_issuer_table(prefix, rest):
    """The prefix lookup behind card_ok answers what a scan of the issuer ranges answers, for any digits."""
    digits = (prefix + rest)[:20]
    for end in range(len(digits) + 1):
        assert card_ok(digits[:end]) == _card_by_scan(digits[:end])


def test_redact_many_is_redact_on_every_corpus_column():
    """A column redacted in one call gives each value what redact gives it, on every region's corpus column."""
    columns: dict[str, list[str]] = {}
    for case in CASES:
        columns.setdefault(case["region"], []).append(case["text"])
    for region, texts in columns.items():
        many = Redactor(regions=[region]).redact_many(texts)
        one = Redactor(regions=[region])
        assert [(t, a) for t, a in zip(texts, many, strict=True) if a != one.redact(t)] == [], region


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_redact_many_keeps_nulls_empties_repeats_and_odd_characters(data):
    """None stays None and empty, repeated, NUL- or newline-bearing values get redact's answer in a column."""
    region = data.draw(st.sampled_from(sorted({case["region"] for case in CASES})))
    piece = st.one_of(st.none(), st.just(""), st.sampled_from(CASES).map(lambda case: case["text"]),
                      spliced_texts().map(lambda spliced: spliced[1]), st.text(alphabet=SPLICE_CHARS + "\x00\r\t", max_size=30))
    values = data.draw(st.lists(piece, max_size=12))
    values += data.draw(st.lists(st.sampled_from(values), max_size=4)) if values else []
    values = [v if v is None or not data.draw(st.booleans()) else v.replace(" ", "\x00", 1) + "\n" for v in values]
    one = Redactor(regions=[region])
    assert Redactor(regions=[region]).redact_many(values) == [None if v is None else one.redact(v) for v in values]


def test_redact_many_returns_clean_values_themselves_and_asks_the_detector_each_time():
    """A value with nothing found comes back as the same object; with a detector every value is searched."""
    clean = "".join(["valve ", "7 open"])
    out = Redactor().redact_many([clean, None, "mail jane@x.de"])
    assert out[0] is clean and out[1:] == [None, "mail <EMAIL>"]
    asked = []
    detector = lambda text: asked.append(text) or []  # noqa: E731
    Redactor(detector=detector).redact_many(["a b", "a b", None])
    assert asked == ["a b", "a b"]


@pytest.mark.parametrize("text", [
    "Bearer of bad news arrived", "Token ring 42 is down", "Basic plan 2024", "password reset requested at 12:00",
    "api key rotated: yes", "the bearer 12 bonds", "x-api-key header missing", "Token v1.2", "retry: 3 backoff: 2s",
])
def test_secret_words_in_prose_are_kept(text):
    """Bearer/Token/Basic before a word without digits or a short one, and secret names without "name: value", are prose."""
    assert Redactor().redact(text) == text


@pytest.mark.parametrize(("text", "region"), [
    ("firmware 10.4.2.1", None), ("fw: 2024.11.27.1", "DE"), ("FW=3.10.12.2001", "FR"), ("release v10.4.2.1 ok", None),
    ("version 192.168.1.1 of the protocol", None), ("build 20251127", "DE"), ("on 20240315 at 9", "DE"),
    ("kernel 5.15.0.1051 up", "AU"),
])
def test_named_versions_and_compact_dates_are_kept(text, region):
    """A dotted version named as one (firmware, fw, version, build, release...) and a YYYYMMDD date are measurements, not an IP or a phone."""
    assert Redactor(regions=[region] if region else []).redact(text) == text


@pytest.mark.parametrize(("text", "expected", "region"), [
    ("ip 10.4.2.1", "ip <IPV4>", None), ("from 10.4.2.1 fw ok", "from <IPV4> fw ok", None),
    ("appelez 06.12.34.56.78", "appelez <PHONE>", "FR"), ("versions differ, host 10.0.0.7", "versions differ, host <IPV4>", None),
    ("tel 030 20251127", "tel <PHONE>", "DE"),
])
def test_addresses_and_phones_near_version_words_are_still_found(text, expected, region):
    """Only what a version word names is kept: an address or phone elsewhere in the text is still redacted."""
    assert Redactor(regions=[region] if region else []).redact(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("iban: de89370400440532013000", "iban: <IBAN>"),
    ("iban: de89 3704 0044 0532 0130 00 ok", "iban: <IBAN> ok"),
    ("IBAN De89 3704 0044 0532 0130 00", "IBAN <IBAN>"),
    ("to gb82west12345698765432.", "to <IBAN>."),
    ("pay fr14 2004 1010 0505 0001 3m02 606 now", "pay <IBAN> now"),
    ("DE89 3704 0044 0532 0130 00 a", "<IBAN> a"), ("NO93 8601 1117 947 a", "<IBAN> a"),
])  # fmt: skip
def test_ibans_in_any_case_are_found(text, expected):
    """An IBAN in lower or mixed case, in groups of four or not, passing mod-97 is an IBAN as its upper-case form is."""
    assert Redactor().redact(text) == expected


@pytest.mark.parametrize("text", [
    "id de89370400440532013001", "commit ab12cd34ef56ab78cd90ef12ab34", "xx89370400440532013000",
    "DE89370400440532013000abc", "key de8937040044053201300012",
])  # fmt: skip
def test_iban_shapes_that_fail_their_checks_or_run_on_are_kept(text):
    """A lower-case IBAN shape failing mod-97, with no IBAN country, or running on into more letters and digits is kept whole."""
    assert Redactor().redact(text) == text


@pytest.mark.parametrize(("text", "expected"), [
    ('"john smith"@example.com', "<EMAIL>"),
    ('mail "john smith"@example.com now', "mail <EMAIL> now"),
    ('to: "j.o\\"s"@example.org;', "to: <EMAIL>;"),
    ('"jane@home"@example.com', "<EMAIL>"),
    ('x "first".last@example.com', "x <EMAIL>"),
    ("to jane@[192.0.2.1] now", "to <EMAIL> now"), ('"j s"@[IPv6:2001:db8::1]', "<EMAIL>"),
    ('{"email": "jane@x.com"}', '{"email": "<EMAIL>"}'),
])  # fmt: skip
def test_emails_with_a_quoted_local_part_are_found_whole(text, expected):
    """An e-mail whose local part is quoted (RFC 5322 quoted-string, spaces and escapes inside) or whose domain is an
    address literal ([192.0.2.1]) becomes one <EMAIL>."""
    assert Redactor().redact(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("Basic dXNlcjpwYXNz", "Basic <SECRET>"),
    ("hdr=x sent Basic YTpi ok", "hdr=x sent Basic <SECRET> ok"),
    ("authorization: basic dXNlcjpwYXNzd29yZA==", "authorization: basic <SECRET>"),
])  # fmt: skip
def test_basic_credentials_anywhere_are_secrets(text, expected):
    """After the word Basic, a base64 text that decodes to user:password (RFC 7617) is a secret wherever it appears."""
    assert Redactor().redact(text) == expected


@pytest.mark.parametrize("text", ["Basic usage", "Basic plan", "Basic info here", "Basic Auth is off", "basic test 12"])
def test_basic_in_prose_is_kept(text):
    """Basic before a word that is not base64 of user:password (usage, plan, info) is prose."""
    assert Redactor().redact(text) == text


@pytest.mark.parametrize(("text", "region"), [
    ("part 1234-5678-9012-3456", None), ("part 1234 5678 9012 3456", None), ("part 1234.5678.9012.3456", None),
    ("sn 9999-078-05-1120", None), ("ref 1111-4111-1111-1111-1111", None), ("lot 1-202-555-0143-7", "US"),
])  # fmt: skip
def test_no_finding_takes_part_of_one_number(text, region):
    """A card, SSN or phone inside a longer run of digits and separators is the whole run or nothing: no piece of it is replaced."""
    assert Redactor(regions=[region] if region else []).redact(text) == text


@pytest.mark.parametrize(("text", "expected", "region"), [
    ("4111 1111 1111 1111 12/25", "<CARD> 12/25", None),
    ("4111 1111 1111 1111 5555 5555 5555 4444", "<CARD> <CARD>", None),
    ("4111 1111 1111 1111 0000", "<CARD> 0000", None), ("0000 4111 1111 1111 1111", "0000 <CARD>", None),
    ("4111-1111-1111-1111 0000", "<CARD> 0000", None), ("+44 20 7946 0018 0000", "<PHONE> 0000", None),
    ("call 0201234567 0301234567", "call <PHONE> <PHONE>", "DE"),
    (" 4000000000000002 #0", " <CARD> #0", None), ("4111 1111 1111 1111 x12", "<CARD> x12", None),
    ("ssn 078-05-1120 ext 9", "ssn <SSN> ext 9", None),
    ("+49 30 1234567 12", "<PHONE>", None),
])  # fmt: skip
def test_whole_numbers_beside_others_in_one_run_are_still_found(text, expected, region):
    """Numbers that tile a run, a card or phone followed by a piece of another shape, and a "+" phone or a card in four
    groups beside any group a space sets apart, are still found."""
    assert Redactor(regions=[region] if region else []).redact(text) == expected


@pytest.mark.parametrize("region", ["GB", "IN", "BR", "DE", "US", "FR"])
@pytest.mark.parametrize("text", [
    "took 1234567890 ns", "took 1234567890ns", "took 1234567890 µs", "clock 1234567890 Hz", "disk 2034567890 B",
    "used 7912345678 KB", "t 1234567890 ms,", "v 7912345678 mV", "temp 7912345678 °C", "load 7912345678 %",
    "dist 7912345678 km/h", "cost 7912345678 EUR", "paid 1234567890 €",
])  # fmt: skip
def test_a_number_followed_by_a_unit_is_a_measurement(text, region):
    """A number directly followed by a unit (ns, µs, Hz, B, KB, mV, °C, %, km...) is a measurement, not a phone."""
    assert Redactor(regions=[region]).redact(text) == text


@pytest.mark.parametrize(("text", "expected", "region"), [
    ("call 020 7946 0018", "call <PHONE>", "GB"), ("call 020 7946 0018 Kim", "call <PHONE> Kim", "GB"),
    ("call 020 7946 0018 s'il vous plaît", "call <PHONE> s'il vous plaît", "GB"),
    ("+44 20 7946 0018 Ms. Jones", "<PHONE> Ms. Jones", None), ("030 1234567 12 ms", "<PHONE> 12 ms", "DE"),
    ("+44 7912 345678 K", "<PHONE> K", "GB"), ("4000000000000002 K", "<CARD> K", None), ("078-05-1120 s", "<SSN> s", None),
])  # fmt: skip
def test_phones_before_words_that_are_not_their_unit_are_still_found(text, expected, region):
    """A phone before a word that only starts like a unit or before a reading with its unit, a "+" phone, a card or an SSN
    before a unit, are still found."""
    assert Redactor(regions=[region] if region else []).redact(text) == expected


@pytest.mark.parametrize(("text", "expected", "region"), [
    ("order #123-456-7890", "order #123-456-7890", "GB"), ("ticket #2025550143", "ticket #2025550143", "CA"),
    ("card #4111 1111 1111 1111", "card #<CARD>", None),
    ("time 12:34:56:78:90:12", "time <MAC>", None), ("tel #+44 20 7946 0018", "tel #<PHONE>", None),
])  # fmt: skip
def test_ambiguous_numbers_are_read_as_documented(text, expected, region):
    """A number right after "#" is an order or ticket number, not a phone (a card or a "+" phone stays one); six colon pairs are a MAC."""
    assert Redactor(regions=[region] if region else []).redact(text) == expected


# _BEARER as first written, with its boundary before the scheme: the engine tries it at every position.
_BEARER_AS_WRITTEN = re.compile(
    r"(?<![\w-])(?:Bearer|bearer|Basic|Token)\s+(?![A-Za-z0-9_-]+=[^=\s,;])"
    r"((?=[A-Za-z0-9._~+/=-]*\d)[A-Za-z0-9._~+/=-]{8,}|[A-Za-z0-9._~+/=-]{16,})",
    re.ASCII,
)


@settings(max_examples=400, deadline=None)
@given(text=st.lists(st.sampled_from(["Bearer", "bearer", "Basic", "Token", "BToken", "Negotiate", "negotiate", "NTLM",
                                      "ntlm", "xNTLM", "-", "_", "x", " ", "\t", "é", ",", "mF_9.B5f-4.1JqM",
                                      "abcdefghijklmnop", "a1", "=", "/"]), max_size=12).map("".join))
def test_the_bearer_regex_finds_what_its_boundary_first_form_finds(text):
    """_BEARER, with its boundary checked after the scheme's first letter, finds the same tokens as the same rule
    written boundary first."""
    assert [m.span(1) for m in redact_module._BEARER.finditer(text)] == [m.span(1) for m in _BEARER_AS_WRITTEN.finditer(text)]


@settings(max_examples=300, deadline=None)
@given(text=st.tuples(st.text("ab\"': \t_-ſıİ", max_size=6), st.from_regex(redact_module._SECRET_JSON, fullmatch=True),
                      st.text("ab\"': ", max_size=6)).map("".join))  # fmt: skip
def test_every_quoted_secret_passes_its_pre_screen(text):
    """Any text _SECRET_JSON finds a secret in (any name, any case, any spacing) is one its pre-screen lets through."""
    if redact_module._SECRET_JSON.search(text) is not None:
        assert redact_module._SECRET_JSON_HINT.search(text) is not None


@pytest.mark.parametrize(("text", "expected"), [
    ("nino ab123456c", "nino <NINO>"), ("nino ab 12 34 56 c ok", "nino <NINO> ok"), ("ni: jg103759a.", "ni: <NINO>."),
    ("Ab123456C", "<NINO>"), ("id qq123456c", "id qq123456c"), ("ref bg123456a", "ref bg123456a"),
    ("hex ab123456e", "hex ab123456e"), ("xab123456c", "xab123456c"),
])  # fmt: skip
def test_ninos_in_lower_or_mixed_case_are_found(text, expected):
    """A UK NINO in lower or mixed case, spaced or not, is a NINO under the same prefix and suffix rules as in upper case."""
    assert Redactor().redact(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("jane.doe%40example.com", "<EMAIL>"),
    ("%22jane%40example.com%22", "%22<EMAIL>%22"),
    ("q=%22jane.doe%40example.com%22&x=1", "q=%22<EMAIL>%22&x=1"),
    ("user=jane%2Edoe%40example.com", "user=<EMAIL>"),
    ("u=jane%2edoe%40example%2Ecom&y=2", "u=<EMAIL>&y=2"),
    ("to%3A%20jane%2Bplant%40example.org%0A", "to%3A%20<EMAIL>%0A"),
    ("next=%2Fprofile%3Fuser%3Djane%40example.com", "next=%2Fprofile%3Fuser%3D<EMAIL>"),
    ("%3Cjane%40example.com%3E", "%3C<EMAIL>%3E"),
    ("list=a%40example.com%2Cb%40example.com", "list=<EMAIL>%2C<EMAIL>"),
    ("email=%D9%81%D9%8A.x%40example.com&lang=de", "email=<EMAIL>&lang=de"),
    ("x=%22john%20smith%22%40example.com&y=1", "x=<EMAIL>&y=1"),
])  # fmt: skip
def test_url_encoded_emails_are_found_whole_without_their_neighbours(text, expected):
    """A URL-encoded e-mail (%40, %2E, %2B inside it) is one <EMAIL>; the encoded quotes, brackets and separators around it stay."""
    assert Redactor().redact(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("Authorization: Negotiate YIIGhgYGKwYBBQUCoIIGejCCBnagMDAu", "Authorization: Negotiate <SECRET>"),
    ("WWW-Authenticate: negotiate oYG2MIGzoAMKAQChCwYJKoZIgvcSAQIC", "WWW-Authenticate: negotiate <SECRET>"),
    ("Authorization: NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAGAbEdAAAADw==", "Authorization: NTLM <SECRET>"),
    (('Authorization: Digest username="Mufasa", realm="api", nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
      'uri="/dir/index.html", nc=00000001, cnonce="f2/wE4q74E6zIJEtWaHKaf5wv", qop=auth, '
      'response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1", opaque="FQhe"'),
     ('Authorization: Digest username="Mufasa", realm="api", nonce="<SECRET>", uri="/dir/index.html", nc=00000001, '
      'cnonce="<SECRET>", qop=auth, response="<SECRET>", opaque="FQhe"')),
    ("digest nonce=abc123def, response=0a4f113b", "digest nonce=<SECRET>, response=<SECRET>"),
    (("Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, "
      "SignedHeaders=host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"),
     "Authorization: AWS4-HMAC-SHA256 Credential=<SECRET>, SignedHeaders=host;x-amz-date, Signature=<SECRET>"),
    ('Authorization: Token token="abcdef0123456789"', 'Authorization: Token token="<SECRET>"'),
    ("Authorization: Token token=abc123xyz, nonce=def", "Authorization: Token token=<SECRET>, nonce=def"),
    ('password="hunter 2" user=bob', 'password="<SECRET>" user=bob'),
    ("Authorization: ApiKey k3y-0123456789", "Authorization: ApiKey <SECRET>"),
    ("proxy-authorization: Splunk 1a2b3c4d-5e6f", "proxy-authorization: Splunk <SECRET>"),
    ("api_key='k-123456'", "api_key='<SECRET>'"),
])  # fmt: skip
def test_credentials_of_every_http_auth_scheme_are_secrets(text, expected):
    """Negotiate and NTLM tokens, Digest's nonce/cnonce/response, AWS SigV4's Credential and Signature and Rails' Token
    token= are secrets, as is any secret parameter's quoted value."""
    assert Redactor().redact(text) == expected


@pytest.mark.parametrize("text", [
    "response=200 took 12 ms", 'nonce="abc" in prose', "Negotiate the price with the vendor", "NTLM authentication failed",
    "we digest the response=ok", "Token expired, token=", 'password=""',
])  # fmt: skip
def test_auth_words_in_prose_are_kept(text):
    """Scheme names and Digest's parameter names outside an authorization value are prose."""
    assert Redactor().redact(text) == text


def with_check_digits(country: str, bban: str) -> str:
    """The IBAN of ``bban`` in ``country``: the two check digits that make its mod-97 remainder 1."""
    number = int("".join(str(int(char, 36)) for char in bban + country + "00"))
    return f"{country}{98 - number % 97:02d}{bban}"


def bban_of(country: str, length: int, seed: int) -> str:
    """A BBAN of ``length - 4`` characters: a bank code in letters, then digits (as GB, NL, MT write theirs)."""
    rng = __import__("random").Random(f"{country}{seed}")
    letters = "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(4))
    return (letters + "".join(rng.choice("0123456789") for _ in range(length)))[: length - 4]


@pytest.mark.parametrize("country", sorted(IBAN_REGISTRY))
def test_ibans_of_every_registry_country_are_found_in_any_case_and_grouping(country):
    """An IBAN of every ISO 13616 country, of its registered length and passing mod-97, is found upper or lower case,
    grouped in fours or not, and a code one character longer or shorter passing mod-97 all the same is no IBAN."""
    length = IBAN_REGISTRY[country]
    for seed in range(3):
        iban = with_check_digits(country, bban_of(country, length, seed))
        grouped = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
        for form in (iban, iban.lower(), grouped, grouped.lower(), iban[:2] + iban[2:].lower()):
            assert Redactor().redact(f"pay to {form}, ref 7") == "pay to <IBAN>, ref 7", form
        for wrong in (length - 1, length + 1):
            code = with_check_digits(country, bban_of(country, wrong, seed))
            assert Redactor().redact(f"code {code} ok") == f"code {code} ok"
        # Grouped, one short (one longer may open with a valid IBAN); its digits in fours may still hold a card.
        code = with_check_digits(country, bban_of(country, length - 1, seed))
        assert "<IBAN>" not in Redactor().redact("code " + " ".join(code[i : i + 4] for i in range(0, len(code), 4)))


@pytest.mark.parametrize("code", ["AA75000000000000", "ZZ12BANK123456789", "QQ70 0123 4567 8901 23"])
def test_mod97_codes_of_no_iban_country_are_kept(code):
    """A code passing mod-97 whose first two letters are no IBAN country is an ordinary code, in any case."""
    compact = code.replace(" ", "")
    fixed = with_check_digits(compact[:2], compact[4:])
    for form in (fixed, fixed.lower(), " ".join(fixed[i : i + 4] for i in range(0, len(fixed), 4))):
        assert Redactor().redact(f"id {form} a") == f"id {form} a"


@pytest.mark.parametrize(("text", "expected"), [
    ("password=&95V3G)tELVsJtaR ok", "password=<SECRET> ok"),
    ("password=#B5%j!Sv_0WPZm0b ok", "password=<SECRET> ok"),
    ("pwd=ab;cd,ef&gh user=bob", "pwd=<SECRET> user=bob"),
    ("GET /cb?token=abc123XYZ&lang=de#top", "GET /cb?token=<SECRET>&lang=de#top"),
    ("password=hunter22, user=bob", "password=<SECRET>, user=bob"),
    ("password: ab,cd;ef host: db1", "password: <SECRET> host: db1"),
    ("https://aparecida:_9I#*v@5#(@host.example/x", "https://<SECRET>@host.example/x"),
    ("https://u:p@ss@db.example:5432/x and jane@example.org", "https://<SECRET>@db.example:5432/x and <EMAIL>"),
])  # fmt: skip
def test_secret_values_holding_separators_are_redacted_whole(text, expected):
    """A secret's value holding "&", "#", "," or ";" (a generated password) is redacted whole: only a space, a quote, or
    a separator that opens the next parameter (&lang=, ", ") ends it; a URL password may hold "@" and "#"."""
    assert Redactor().redact(text) == expected


@pytest.mark.parametrize(("text", "region"), [
    ("torch 2099.363.914+cu121", "CN"), ("pkg 823.310.575-rc1", "SE"), ("app 1.10.2-beta.3", "US"),
    ("8088361935 N·m", "DE"), ("4274645112 lux", "DE"), ("7912345678 kΩ", "GB"), ("7912345678 Ω", "GB"),
])  # fmt: skip
def test_versions_with_a_suffix_and_more_units_are_measurements(text, region):
    """A dotted version with a pre-release or build suffix (-rc1, +cu121) is no phone, nor is a number before lux, N·m or Ω."""
    assert Redactor(regions=[region]).redact(text) == text


@pytest.mark.parametrize(("text", "expected"), [
    ('{"password": "pa\'ss123"}', '{"password": "<SECRET>"}'), ("{'api_key': 'k\"1234'}", "{'api_key': '<SECRET>'}"),
    ('{"password": "a", "b": "c"}', '{"password": "<SECRET>", "b": "c"}'),
])  # fmt: skip
def test_a_quoted_secret_runs_to_the_quote_that_opened_it(text, expected):
    """A JSON or dict secret's value holding the other quote character is redacted whole, up to its own closing quote."""
    assert Redactor().redact(text) == expected


def test_a_value_opening_with_at_is_no_address():
    """In key=@value nothing is before the "@": no e-mail, so a secret parameter's value stays a secret."""
    assert Redactor().redact("password=@0.A user=bob") == "password=<SECRET> user=bob"
    assert Redactor().redact("to=@example.com") == "to=@example.com"


@pytest.mark.parametrize("address", ["0=@A.Af", "12=@example.com", "x 0=@a.io y"])
def test_an_address_whose_local_part_ends_in_equals_after_no_name_is_an_address(address):
    """Before "=@", text that opens with no letter is no parameter's name: "0=@A.Af" is an address, found whole."""
    assert "@" not in Redactor().redact(address)


@pytest.mark.parametrize(("text", "region"), [
    ("581.542.170", "SE"), ("value 581.542.170 ok", "SE"), ("total 1.234.567 units", "DE"), ("n=12, 534.645.497 ok", "DE"),
    ("1764201600", "CN"), ("1061855353", "CN"), ("created 1061855353 ok", "CN"), ("t 1061855353123 ok", "CN"),
    ("581542170", "SE"), ("value 581542170 ok", "SE"), ("counter 534645497416", "DE"), ("seq 30123456", "AT"),
])  # fmt: skip
def test_bare_measurements_in_permissive_regions_are_kept(text, region):
    """A bare or thousands-dotted number with no phone context, an epoch second or millisecond, or a national number
    written without the trunk prefix its country writes, is a measurement even where libphonenumber calls it valid."""
    assert Redactor(regions=[region]).redact(text) == text


@pytest.mark.parametrize(("text", "expected", "region"), [
    ("tel 581542170", "tel <PHONE>", "SE"), ("phone: 1061855353", "phone: <PHONE>", "CN"),
    ("call back 10.969512, Աշոտ", "call back <PHONE>, Աշոտ", "AM"), ('{"contact":"91.208560"}', '{"contact":"<PHONE>"}', "AM"),
    ("Tel.: 581.542.170", "Tel.: <PHONE>", "SE"), ("0581542170", "<PHONE>", "SE"), ("08-581 542 17", "<PHONE>", "SE"),
    ("13812345678", "<PHONE>", "CN"), ("01061855353", "<PHONE>", "CN"), ("9876543210", "<PHONE>", "IN"),
    ("46008589", "<PHONE>", "NO"), ("seen: 46008589", "seen: <PHONE>", "NO"), ("03012345678", "<PHONE>", "DE"),
    ("202.555.0143", "<PHONE>", "US"), ("06.12.34.56.78", "<PHONE>", "FR"), ("+46 581 542 170", "<PHONE>", None),
])  # fmt: skip
def test_phones_written_as_their_country_writes_them_or_named_are_found(text, expected, region):
    """A national number written with its trunk prefix or its country's grouping, or after a phone word (tel, call,
    contact), is still a phone, also when it is written like a decimal."""
    assert Redactor(regions=[region] if region else []).redact(text) == expected


@pytest.mark.parametrize(("text", "expected", "region"), [
    ("card 4516933528383", "card <CARD>", None), ('{"visa": "4727741589422"}', '{"visa": "<CARD>"}', None),
    ("Kreditkarte 4516933528383 ok", "Kreditkarte <CARD> ok", None),
    ("scanned 4516933528383", "scanned 4516933528383", None), ("upc 46008589 4006381333931", "upc 46008589 4006381333931", "NO"),
    ('{"contact":"4516933528383"}', '{"contact":"4516933528383"}', None),
])  # fmt: skip
def test_thirteen_digit_visa_cards_are_found_where_named_and_barcodes_kept(text, expected, region):
    """A 13-digit Visa number that also carries an EAN-13 check digit is a card where a card word names it, a barcode
    elsewhere; an 8-digit number with an EAN-8 check digit is a barcode only where a barcode word is."""
    assert Redactor(regions=[region] if region else []).redact(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("jane%2540example.com", "<EMAIL>"), ("jane%252540example.com", "<EMAIL>"),
    ("u=jane%252Edoe%252540example%252Ecom&y=2", "u=<EMAIL>&y=2"),
    ("next=%252Fp%253Fuser%253Djane%252540example.com", "next=%252Fp%253Fuser%253D<EMAIL>"),
    ("%25253Cjane%25252540example.com%25253E", "%25253C<EMAIL>%25253E"),
])  # fmt: skip
def test_emails_encoded_more_than_once_are_found(text, expected):
    """An address URL-encoded twice or three times (%2540, %252540, %252E) is one <EMAIL>, its encoded neighbours kept."""
    assert Redactor().redact(text) == expected


def test_percent_signs_that_decode_to_no_address_are_kept():
    """A "%25" that decodes to no "@" (50%2540 off, 100%25) is left alone."""
    for text in ("50%2541 off", "load 100%25 now", "a%2540", "%2540example.com"):
        assert Redactor().redact(text) == text
@pytest.mark.parametrize(("text", "expected"), [
    ("password=ab<cd>ef", "password=<SECRET>"), ("password=ab<cd>ef user=bob", "password=<SECRET> user=bob"),
    ("token=a>b<c", "token=<SECRET>"), ("password: ab<cd>ef host: db1", "password: <SECRET> host: db1"),
    ("<td>password=hunter2</td>", "<td>password=<SECRET></td>"), ("password=hunter2</p>", "password=<SECRET></p>"),
    ("<password>hunter2</password>", "<password><SECRET></password>"),
    ("<Password>a<b c</Password>", "<Password><SECRET></Password>"),
    ('<api_key type="x">k-12345</api_key>', '<api_key type="x"><SECRET></api_key>'),
    ("<cfg><client_secret>s3cr3t</client_secret><port>8080</port></cfg>",
     "<cfg><client_secret><SECRET></client_secret><port>8080</port></cfg>"),
])  # fmt: skip
def test_secret_values_holding_angle_brackets_or_in_markup_are_redacted_whole(text, expected):
    """Outside markup "<" and ">" are characters of a password; inside it (a tag before the key, or a closing tag) the
    value ends at the tag; an XML/HTML element named after a secret has its text redacted."""
    assert Redactor().redact(text) == expected


@pytest.mark.parametrize("text", ["<port>8080</port>", "<token_count>12</token_count>", "<b>password</b> reset", "<password/>"])
def test_elements_not_named_after_secrets_are_kept(text):
    """Elements of other names, and a secret word as an element's text, stay as they are."""
    assert Redactor().redact(text) == text




@pytest.mark.parametrize(("text", "expected", "region"), [
    ("S/N 7126-8348-58", "S/N 7126-8348-58", "US"), ("SN: 2025550143", "SN: 2025550143", "US"),
    ("serial=573848058141", "serial=573848058141", None), ("Serial No. 0301234567", "Serial No. 0301234567", "DE"),
    ("lot 202-555-0143", "lot 202-555-0143", "US"), ("P/N 5671-6700-1047", "P/N 5671-6700-1047", None),
    ("serial 4111 1111 1111 1111", "serial <CARD>", None), ("S/N +1 202 555 0143", "S/N <PHONE>", None),
    ("snap 2025550143", "snap <PHONE>", "US"), ("person 2025550143", "person <PHONE>", "US"),
])  # fmt: skip
def test_numbers_after_a_serial_label_are_serials(text, expected, region):
    """After S/N, serial, P/N, part, lot or batch a number is a serial: no national phone nor a 12- or 13-digit card
    (a "+" phone and a card of 14 digits or more are still found)."""
    assert Redactor(regions=[region] if region else []).redact(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("mac ab:cd:ef:ab:cd:ef", "mac <MAC>"), ("key AKIAPSQOEFVEUISGIQAO here", "key <API_KEY> here"),
    ("OCR: ACME sk_live_sKGBPhdBCsFwyHhfFAhFfAzu Berlin", "OCR: ACME <API_KEY> Berlin"),
    ("token ghp_" + "a" * 36 + " ok", "token <API_KEY> ok"),
])  # fmt: skip
def test_keys_and_macs_without_a_decimal_digit_are_found(text, expected):
    """An API key or a MAC address in a text with no decimal digit and no "-" is still found."""
    assert Redactor().redact(text) == expected


@pytest.mark.parametrize(("text", "region"), [
    ("bind 0.0.0.0:8080", None), ("mask 255.255.255.0", None), ("netmask=255.255.240.0", None), ("0.1.2.3", None),
    ("firmware 4.19.0-1024", "NO"), ("kernel 5.15.0-1051-raspi", "DE"), ("fw: 2.3.1-4471 ok", "AM"),
    ("rows 1 234 567", "DE"), ("rows 12 345 678", "SE"), ("total 581 542 170", "SE"), ("n=12 345 678 ok", "AM"),
])  # fmt: skip
def test_config_addresses_named_versions_and_spaced_counts_are_kept(text, region):
    """The unspecified address and netmasks (0.x.x.x, 255.x.x.x: no host's), a named version with a build after "-",
    and a count with thousands spaces in a country that writes its trunk prefix stay as they are."""
    assert Redactor(regions=[region] if region else []).redact(text) == text


@pytest.mark.parametrize(("text", "expected", "region"), [
    ("from 10.0.0.1 via 1.1.1.1", "from <IPV4> via <IPV4>", None), ("fw 4.19.0 at 192.168.1.20", "fw 4.19.0 at <IPV4>", None),
    ("08-581 542 17", "<PHONE>", "SE"), ("tel 581 542 170", "tel <PHONE>", "SE"), ("612 345 678", "<PHONE>", "ES"),
    ("010 6185 5353", "<PHONE>", "CN"), ("2##-#####".replace("#", "5"), "<PHONE>", "AM"),
])  # fmt: skip
def test_addresses_and_phones_beside_those_rules_are_still_found(text, expected, region):
    """Hosts' addresses, and phones grouped as their country groups them or named by a phone word, are still found."""
    assert Redactor(regions=[region] if region else []).redact(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ('<input type="password" name="password" value="hunter2">', '<input type="password" name="password" value="<SECRET>">'),
    ("<input name=\"api_key\" value='abc123'>", "<input name=\"api_key\" value='<SECRET>'>"),
    ('<input value="s3cr3t!" name="passwd" />', '<input value="<SECRET>" name="passwd" />'),
    ('<input type="password" name="pw1" value="hunter2">', '<input type="password" name="pw1" value="<SECRET>">'),
    ("<INPUT TYPE=password NAME=login VALUE=hunter2>", "<INPUT TYPE=password NAME=login VALUE=<SECRET>>"),
    ('<input type="hidden" name="csrf_token" value="a1b2c3">', '<input type="hidden" name="csrf_token" value="<SECRET>">'),
    ('<param name="client_secret" value="xyz-987"/>', '<param name="client_secret" value="<SECRET>"/>'),
    ('<input name="confirmPassword" value="x1"><input name="user[password]" value="y2">',
     '<input name="confirmPassword" value="<SECRET>"><input name="user[password]" value="<SECRET>">'),
    ('{"name":"password","value":"hunter2"}', '{"name":"password","value":"<SECRET>"}'),
    ('{"name": "api_key", "value": "abc123"}', '{"name": "api_key", "value": "<SECRET>"}'),
    ('{"value": "hunter2", "name": "Password"}', '{"value": "<SECRET>", "name": "Password"}'),
    ("{'name': 'access_token', 'value': 'tok.en'}", "{'name': 'access_token', 'value': '<SECRET>'}"),
])  # fmt: skip
def test_form_fields_named_as_secrets_lose_their_value(text, expected):
    """An HTML/XML form field or a JSON name/value pair named as a secret (or of type password) has its value replaced."""
    assert Redactor().redact(text) == expected


@pytest.mark.parametrize("text", [
    '<input name="temperature" value="21.5">', '<input type="text" name="username" value="bob">',
    '<input type="number" name="rpm" value="2977"><input type="password" name="password">',
    '{"name":"temperature","value":"21.5"}', '{"name": "rpm", "value": 2977}', '<option value="key">key</option>',
    '{"name": "password_policy_min_length", "value": "12"}',
])  # fmt: skip
def test_form_fields_of_other_names_keep_their_value(text):
    """A form field or a JSON name/value pair named after anything but a secret keeps its value."""
    assert Redactor().redact(text) == text


@pytest.mark.parametrize(("text", "expected", "region"), [
    ("phone=2025550123", "phone=<PHONE>", "US"), ('{"phone": 2025550123}', '{"phone": <PHONE>}', "US"),
    ("tlf=98765432", "tlf=<PHONE>", "NO"), ('"mobile": 9876543210', '"mobile": <PHONE>', "IN"),
    ("tel=0581542170", "tel=<PHONE>", "DE"),
])  # fmt: skip
def test_a_number_keyed_by_a_phone_word_is_a_phone(text, expected, region):
    """The value of key=value or "key": value is a phone where the key is a phone word, though other keys' values are ids."""
    assert Redactor(regions=[region]).redact(text) == expected


@pytest.mark.parametrize(("text", "region"), [
    ("id: 98765432", "NO"), ("ID 98765432", "NO"), ("device_id: 98765432", "NO"), ("userId: 41234567", "DK"),
    ("order no: 98765432", "NO"), ("ref 2025550123", "US"), ("seq: 9876543210", "IN"), ("id: 612345678", "ES"),
    ("ticket# 98765432", "NO"), ("count: 98765432", "NO"), ("nr. 98765432", "NO"), ("device_id=574155679768", "DE"),
    ("id: 5741556797680", "BR"),
])  # fmt: skip
def test_a_bare_number_labelled_as_an_id_or_count_is_no_phone(text, region):
    """A bare national-length number after an id's or a count's label (id, no, ref, seq, count...) stays as it is, as
    does a 12- or 13-digit one that Luhn and a Maestro range would make a short card."""
    assert Redactor(regions=[region]).redact(text) == text


@pytest.mark.parametrize(("text", "expected", "region"), [
    ("tlf 98765432", "tlf <PHONE>", "NO"), ("+47 987 65 432", "<PHONE>", "NO"), ("98765432", "<PHONE>", "NO"),
    ("ring meg på 987 65 432", "ring meg på <PHONE>", "NO"), ("id: +47 987 65 432", "id: <PHONE>", "NO"),
    ("1800 425 1234", "<PHONE>", "IN"), ("18004251234", "<PHONE>", "IN"), ("+91 98765 43210", "<PHONE>", "IN"),
    ("toll free 1800-425-1234", "toll free <PHONE>", "IN"), ("helpline: 18004251234", "helpline: <PHONE>", "IN"),
    ("ts=1764201600", "ts=1764201600", "IN"), ("at 1764201600 ok", "at 1764201600 ok", "IN"), ("1764201600", "1764201600", "IN"),
])  # fmt: skip
def test_phones_without_trunk_prefix_and_indian_toll_free_are_found_and_epochs_kept(text, expected, region):
    """Norway's bare or grouped numbers and India's toll-free and mobile numbers are phones; a bare epoch second is not."""
    assert Redactor(regions=[region]).redact(text) == expected


VISA_13 = "4165457897392"  # Luhn and a GS1 check digit both: a Visa card or an EAN-13 barcode


@pytest.mark.parametrize("text", [
    "visa {}", "cardNumber={}", "card_number: {}", "ccnum={}", "payment {}", "kart {}", "karta: {}", "kortti {}",
    "Kartennummer {}", "pago con tarjeta {}", "carta {}", "cartão {}", "amex {}", "mastercard {}", "paid with {}",
    "карта {}", "カード {}", "카드 {}", "卡号 {}", "tarjeta de crédito {}", "betaling {}",
])  # fmt: skip
def test_a_13_digit_visa_named_by_a_card_word_in_any_language_is_a_card(text):
    """A 13-digit Visa number that also carries an EAN check digit is a card where a card or payment word of any of many
    languages names it."""
    assert Redactor().redact(text.format(VISA_13)) == text.format("<CARD>")


@pytest.mark.parametrize("separator", ["-", " "])
def test_a_13_digit_visa_grouped_4_4_5_is_a_card(separator):
    """A 13-digit Visa number grouped 4-4-5 as a card is written is a card, whatever check digit it carries."""
    text = "paid " + separator.join((VISA_13[:4], VISA_13[4:8], VISA_13[8:])) + " ok"
    assert Redactor(regions=["DE"]).redact(text) == "paid <CARD> ok"


@pytest.mark.parametrize("text", ["{}", "EAN {}", "scanned {} ok", "sku={}", "item {} x2", "discarded {}", "cardio {}"])
def test_a_bare_13_digit_barcode_stays_without_a_card_word(text):
    """A bare 13-digit number that carries an EAN check digit stays a barcode where no card word names it, also before a
    quantity that reads like an extension (x2)."""
    assert Redactor(regions=["DE"]).redact(text.format(VISA_13)) == text.format(VISA_13)


@pytest.mark.parametrize(("text", "region"), [
    ("20.17.650", "LI"), ("value 12.17.696 ok", "AT"), ('{"v": "14.14.109"}', "FI"), ("20.16.249", "DE"),
    ("20.20.136", "BG"), ("987.65.432", "NO"), ("12.17.696.5", "AT"), ("build 10.555.123", "AM"),
])  # fmt: skip
def test_a_dotted_number_in_a_versions_shape_is_no_phone_unless_named(text, region):
    """Three dotted groups of at most three digits (a version), or more where the country writes a trunk prefix the number
    lacks, stay as they are where no phone word names them."""
    assert Redactor(regions=[region]).redact(text) == text


@pytest.mark.parametrize(("text", "expected", "region"), [
    ("tel 20.17.650", "tel <PHONE>", "LI"), ("Tel. 12.17.696", "Tel. <PHONE>", "AT"), ("tlf 987.65.432", "tlf <PHONE>", "NO"),
    ("201.555.0123", "<PHONE>", "US"), ("379.354.6019", "<PHONE>", "PK"), ("01.23.45.67.89", "<PHONE>", "FR"),
    ("0581.54.21.70", "<PHONE>", "DE"),
])  # fmt: skip
def test_dotted_phones_in_their_countrys_shape_or_named_are_found(text, expected, region):
    """A phone written with dots as its country groups it (a group of four, or its trunk prefix), or named, is found."""
    assert Redactor(regions=[region]).redact(text) == expected


@pytest.mark.parametrize(("text", "expected", "region"), [
    ("5555918305440", "5555918305440", "BR"), ("qty 2 item 5555918305440", "qty 2 item 5555918305440", "BR"),
    ("tel 5555918305440", "tel <PHONE>", "BR"), ("+55 5591830 5440", "<PHONE>", "BR"),
])  # fmt: skip
def test_a_bare_13_digit_ean_that_opens_with_the_country_code_is_a_phone_only_where_named(text, expected, region):
    """Thirteen bare digits with a GS1 check digit are a barcode, though they read as a phone with its country code
    and no "+", unless a phone word names them."""
    assert Redactor(regions=[region]).redact(text) == expected
