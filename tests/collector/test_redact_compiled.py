"""The compiled redactor (collector/redact.py built by Cython at install) is used where it was built and answers
exactly as the pure-Python one: on the whole corpus and on generated digits, separators and look-alikes."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloop.collector import redact as redact_module
from edgeloop.collector.redact import CustomPattern

CORPUS = Path(__file__).resolve().parent.parent / "privacy" / "corpus.jsonl"
CASES = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]
REGIONS = sorted({case["region"] for case in CASES})
PURE = redact_module._PureRedactor


def test_the_compiled_redactor_is_built_and_used():
    """An install with a C compiler (./scripts/test's) builds the extension from this very redact.py and uses it."""
    if os.environ.get("EDGELOOP_PURE_PYTHON") == "1":
        pytest.skip("EDGELOOP_PURE_PYTHON=1: installed without the extension on purpose")
    assert redact_module.COMPILED, (
        "edgeloop.collector._redact_fast is missing or was built from another redact.py: "
        "reinstall (pip install -e .) and read the build log"
    )
    assert redact_module.Redactor is not PURE and type(redact_module.Redactor.find).__name__ == "cython_function_or_method"


@pytest.fixture(scope="module")
def compiled():
    if not redact_module.COMPILED:
        pytest.skip("the compiled redactor is not built here (test_the_compiled_redactor_is_built_and_used says why)")
    return redact_module._fast


def test_every_corpus_case_gets_the_same_answer(compiled):
    """Every corpus case, PII and look-alike, in every locale, is redacted alike by both, one by one and as columns."""
    columns: dict[str, list[str]] = {}
    for case in CASES:
        columns.setdefault(case["region"], []).append(case["text"])
    differ = []
    for region, texts in columns.items():
        pure, fast = PURE(regions=[region]), compiled.Redactor(regions=[region])
        one = [fast.redact(text) for text in texts]
        many = compiled.Redactor(regions=[region]).redact_many(texts)
        want = PURE(regions=[region]).redact_many(texts)
        differ += [(region, text, a, b, c) for text, a, b, c in zip(texts, want, one, many, strict=True) if not a == b == c]
        differ += [(region, text) for text in texts[:50] if pure.find(text) != fast.find(text)]
    assert differ == []


# What numbers and their look-alikes are made of: ASCII, Arabic-Indic, Devanagari, Bengali and full-width digits,
# every separator a run may hold, letters that glue or start an extension, and the characters of dates and keys.
DIGITS = "0123456789" + "٠١٢٣٤٥٦٧٨٩" + "०१२३४५६७८९" + "০১২৩৪৫৬৭৮৯" + "０１２３４５６７８９"
SEPARATORS = " \u00a0-./()+:#x_=%@,;\n"
LETTERS = "abcdefxXEeyJAKIAGBDSKext§é"
PIECES = [
    "+1 202 555 0143", "+49 30 901820", "0030 6936 088357", "(029)2018696", "849-224-3775x0122", "4111 1111 1111 1111",
    "5555-5555-5555-4444", "378282246310005", "078-05-1120", "AB 12 34 56 C", "DE89 3704 0044 0532 0130 00",
    "2026-11-26", "26.11.2026", "12:30:45.123", "48.856613", "-0.5", "1764151755", "1764151755123",
    "4006381333931", "550e8400-e29b-41d4-a716-446655440000", "d41d8cd98f00b204e9800998ecf8427e", "10.0.0.1",
    "2001:db8::1", "00:1a:2b:3c:4d:5e", "jane@x.de", "pkts=92786175", '"ts": 1764151755', "ext. 12", "SKU-4471-0032",
    "123.456.789-09", "12.345.678/0001-95", "12345678Z", "X1234567L", "S1234567D", "RSSMRA85T10A562S", "131052-308T",
    "11010519491231002X", "900101-1234568", "44051401359", "123456782", "2345 6789 0124", "811218-9876", "2123 45670 1",
]  # fmt: skip


@st.composite
def texts(draw: st.DrawFn) -> str:
    """Pieces of phones, cards, IDs and look-alikes glued by digits, separators and letters, long digit runs included."""
    parts = draw(st.lists(st.one_of(
        st.sampled_from(PIECES),
        st.text(alphabet=DIGITS[:10] + SEPARATORS, min_size=1, max_size=30),
        st.text(alphabet=DIGITS + SEPARATORS + LETTERS, max_size=20),
        st.integers(0, 10**40).map(str),  # long runs
        st.sampled_from(CASES).map(lambda case: case["text"]),
    ), max_size=5))  # fmt: skip
    return "".join(parts)


@settings(max_examples=200, deadline=None)
@given(text=texts(), region=st.sampled_from(["US", "DE", "IN", "GB", "BD", "EG", "FR", "BR", "PL", "NL", "SE", "DK", "KR", "AU"]))
def test_generated_digits_and_separators_get_the_same_answer(compiled, text, region):
    """Generated digit runs, separators, Unicode digits and look-alikes: the compiled redactor finds what the pure one finds."""
    assert compiled.Redactor(regions=[region]).find(text) == PURE(regions=[region]).find(text)
    assert compiled.Redactor().redact(text) == PURE().redact(text)


def test_custom_patterns_allow_list_and_detector_work_alike(compiled):
    """Custom kinds with validators, the allow-list and a detector give the same output, and the same errors."""
    patterns = [CustomPattern("employee", re.compile(r"\bEMP-\d{6}\b"), "<EMPLOYEE>"),
                CustomPattern("member", re.compile(r"\bM\d{8}\b"), "<MEMBER>", validator="luhn"),
                CustomPattern("acct", re.compile(r"\b[A-Z]{2}\d{2}[A-Z0-9 ]{11,30}\b"), "<ACCT>", validator="mod97")]  # fmt: skip
    allow = [re.compile(r"\bsupport@acme\.example\b")]

    def detector(text: str):
        start = text.find("Jane Roe")
        return [] if start < 0 else [(start, start + 8, "person")]

    texts = ["EMP-004211 and M12345674 M12345675, call +49 30 901820", "mail support@acme.example or jo@acme.example",
             "Jane Roe paid DE89 3704 0044 0532 0130 00 on 2026-11-26", "", "no pii here, 48.856613"]  # fmt: skip
    for kwargs in ({"patterns": patterns, "allow": allow, "regions": ["DE"]}, {"detector": detector}):
        assert compiled.Redactor(**kwargs).redact_many(texts) == PURE(**kwargs).redact_many(texts)
    for redactor in (compiled.Redactor(detector=lambda text: [(0, 99, "x")]), PURE(detector=lambda text: [(0, 99, "x")])):
        with pytest.raises(ValueError, match="outside"):
            redactor.redact("short")
    with pytest.raises(ValueError, match="unknown phone region"):
        compiled.Redactor(regions=["XX"])


def _prescreens(module, text: str) -> tuple:
    """What the character scans of ``module`` say of a text: token masks without and with digits, look-alike mask, long
    run, and the digit runs of six characters or more."""
    return (module._token_mask_scan(text, False), module._token_mask_scan(text, True), module._lookalike_mask_scan(text),
            module._long_run_scan(text), module._digit_runs_scan(text), module._any_decimal(text), module._any_digit(text),
            module._secret_colon_scan(text), module._secret_hints_scan(text), module._decimal_phones_scan(text),
            module._id_runs_scan(text))  # fmt: skip


def _by_regex(text: str) -> tuple:
    """The same answers from the regexes the pure-Python redactor runs."""
    assert not redact_module._IN_C
    runs = [run.span() for run in redact_module._DIGIT_RUN.finditer(text) if run.end() - run.start() >= 6]
    return (redact_module._token_mask(text, False), redact_module._token_mask(text, True), redact_module._lookalike_mask(text),
            redact_module._LONG_RUN.search(text) is not None, runs, redact_module._ANY_DIGIT.search(text) is not None,
            any(char.isdigit() for char in text), redact_module._SECRET_COLON_HINT.search(text) is not None,
            redact_module._secret_hints(text), [match.span() for match in redact_module._DECIMAL_PHONE.finditer(text)],
            redact_module._id_runs(text))  # fmt: skip


def test_character_scans_answer_as_the_regexes_on_the_corpus(compiled):
    """On every corpus text the compiled scans (and the same code run as Python) give the regexes' pre-screen answers."""
    differ = [(case["text"], _by_regex(case["text"]), _prescreens(compiled, case["text"])) for case in CASES
              if not _by_regex(case["text"]) == _prescreens(compiled, case["text"]) == _prescreens(redact_module, case["text"])]  # fmt: skip
    assert differ == []


SCAN_CHARS = "0123456789²٣ +-().:/#_xXeE\u00a0AGKSIzaeyJghkpsnwo-BEGINabcdefABCDEFt§rRwWdDYTN\t\u2003\u017f=%3\"'uUlLMiIgG""ZVvé"


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(texts(), st.text(alphabet=SCAN_CHARS, max_size=40)))
def test_character_scans_answer_as_the_regexes_on_generated_text(compiled, text):
    """On generated text dense in the characters each pre-screen looks at, the scans give the regexes' answers."""
    assert _prescreens(compiled, text) == _by_regex(text) == _prescreens(redact_module, text)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="ab_-=:\n 9é²·\u0300", max_size=60), data=st.data())
def test_key_scan_finds_what_the_key_regex_finds(compiled, text, data):
    """Before any "=" the compiled scan takes the key _KEY_TAIL takes: word characters of any script and "-", up to 40
    back, also before a final newline."""
    high = data.draw(st.integers(0, len(text)))
    low = data.draw(st.integers(max(0, high - 40), high))
    match = redact_module._KEY_TAIL.search(text, low, high)
    want = match.span() if match else (high, high)
    assert compiled._key_tail_scan(text, low, high) == redact_module._key_tail_scan(text, low, high) == want


def test_word_characters_are_what_isalnum_and_underscore_say():
    """The key scan's test for a word character, isalnum() or "_", is the regex engine's \\w on every code point."""
    word = re.compile(r"\w")
    assert [c for c in range(0x110000) if (word.match(chr(c)) is not None) != (chr(c).isalnum() or chr(c) == "_")] == []


# Strings each pre-screen regex matches, so a prefix or branch added to a regex but not to its scan is found even when
# the corpus holds no such text (a scan that says "no" where its regex says "yes" would skip a detector). Each branch of
# an alternation is drawn as often as a whole regex; lookbehinds are spelled out, as hypothesis cannot generate them.
REGEX_BRANCHES = [
    *redact_module._API_KEY_HINT.pattern.split("|"),  # literal prefixes only: no group to split across
    r"[:-][0-9A-Fa-f]{2}[:-][0-9A-Fa-f]{2}[:-]", r"\.[0-9A-Fa-f]{4}\.",  # _MAC_HINT
    r"\d\d ?\d\d ?\d\d ?[A-Da-d]",  # _NINO_HINT
    redact_module._IBAN_HINT.pattern,
    redact_module._HEX_RUN.pattern,
    redact_module._DATE_HINT.pattern,
    r"\d:\d\d",  # _TIME_HINT
    r"\d\.\d",  # _DECIMAL_HINT
    r"\d{1,4}\.\d{4,9}",  # _DECIMAL_PHONE
    redact_module._LONG_RUN,  # compiled, with its IGNORECASE for "ext"
    redact_module._SECRET_COLON_HINT,  # compiled, with its IGNORECASE
    *["=", "%3", '":', "':", "earer", "asic ", "oken ", "ASIC ", "egotiate", "TLM ", "tlm ", ":uthorization",
      "UTHORIZATION:", "igest", "IGEST"],  # _secret_hints' substrings
]


def test_the_key_hint_is_an_alternation_of_literal_prefixes():
    """REGEX_BRANCHES splits _API_KEY_HINT on "|": that holds while it has no group (add one and split it by hand)."""
    assert "(" not in redact_module._API_KEY_HINT.pattern


@settings(max_examples=600, deadline=None)
@given(text=st.tuples(st.text(SCAN_CHARS, max_size=6),
                      st.sampled_from(REGEX_BRANCHES).flatmap(lambda branch: st.from_regex(branch, fullmatch=True)),
                      st.text(SCAN_CHARS, max_size=6)).map("".join))  # fmt: skip
def test_character_scans_answer_as_the_regexes_on_text_their_regexes_match(compiled, text):
    """On text generated from each branch of each pre-screen regex, between other characters, the scans give the
    regexes' answers."""
    assert _prescreens(compiled, text) == _by_regex(text) == _prescreens(redact_module, text)


@settings(max_examples=300, deadline=None)
@given(text=st.tuples(st.text(SCAN_CHARS, max_size=6), st.from_regex(redact_module._SECRET_COLON, fullmatch=True),
                      st.text(SCAN_CHARS, max_size=6)).map("".join))  # fmt: skip
def test_every_colon_secret_passes_its_pre_screen(text):
    """Any text _SECRET_COLON finds a secret in (any case, any whitespace) is one its pre-screen lets through."""
    if redact_module._SECRET_COLON.search(text) is not None:
        assert redact_module._SECRET_COLON_HINT.search(text) is not None
        assert redact_module._secret_colon_scan(text)
