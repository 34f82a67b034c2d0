"""Scrub personal data and secrets out of free text: the ``redact`` privacy rule.

``Redactor(regions=..., patterns=..., allow=..., detector=...).redact(text)`` (or ``.redact_many(column)``,
a column's values in one call, as the agent does) replaces::

    e-mail addresses, Unicode/IDN, quoted ("j s"@x.com), URL-encoded <EMAIL>
      (jane%2Edoe%40x.com, also inside %22...%22; encoded up to
      four times: jane%2540x.com, %252540)
    phone numbers that libphonenumber calls valid: international   <PHONE>
      (+CC, 00CC) anywhere; national ones of the declared regions,
      with their extension (x12, ext. 12)
    payment cards: Luhn + a real IIN range and its lengths          <CARD>
    IBANs: their country's length and mod-97, in any case           <IBAN>
    IPv4, IPv6 (also right after a colon: addr:2001:db8::1)         <IPV4> <IPV6>
    MAC addresses (00:1a:2b:3c:4d:5e, 00-1A-..., 001a.2b3c.4d5e)    <MAC>
    JSON Web Tokens                                                 <JWT>
    well-known API keys (AWS, GitHub, GitLab, Stripe, Slack,        <API_KEY>
      Google, OpenAI/Anthropic, SendGrid, npm, PyPI, Twilio)
    URL credentials (user:pass@) and secret parameters              <SECRET>
      (?token=, password=, api_key=, Bearer ..., Basic user:pass,
      Negotiate, NTLM, Digest's nonce/response, any Authorization,
      <password>...</password>, the value of a form field named
      as a secret or of type password: <input name="password"
      value="...">, {"name": "api_key", "value": "..."}; "<" and
      ">" are part of a value outside markup, and a closing tag ends one)
    US social security numbers (area/group/serial rules)            <SSN>
    UK national insurance numbers (prefix and suffix rules, any case) <NINO>
    national identity numbers by their check digit or letter:       <CPF> <CNPJ> <DNI>
      Brazil's CPF/CNPJ, Spain's DNI/NIE, Italy's codice fiscale,   <NIE> <CODICE_FISCALE>
      Finland's HETU, China's resident id, Singapore's NRIC/FIN,    <HETU> <RESIDENT_ID>
      Korea's RRN anywhere in their written forms; bare digit runs  <NRIC> <RRN> <AADHAAR>
      (Aadhaar, PESEL, BSN, personnummer, CPR, TFN, Medicare, and   <PESEL> <BSN> <CPR>
      CPF, CNPJ, RRN bare) only in the declared regions or named    <PERSONNUMMER> <TFN> <MEDICARE>

plus custom patterns from the configuration and, optionally, the spans a model-based
detector returns (names, street addresses: nothing here finds those).

A candidate that fails its check (Luhn, IIN, mod-97, libphonenumber, SSN rules) is left
alone: a measurement is never rewritten because it looks like a number. Dates, decimals,
UUIDs and hex digests are masked before numbers are looked for, so no piece of them becomes
a card or a phone. A number glued to letters (``a716-4466554400``) is part of an identifier
and is left alone too; one followed by a unit (``1234567890 ns``) or after ``#`` (an order number) is no
national phone, nor one after an id's label (``id: 98765432``, ``device_id=``) unless a phone word names it; the value of
``key=`` is a counter unless the key is a phone word (``phone=...``). A finding is a whole number or nothing: no card, SSN
or phone is cut out of a longer run.
A national number in a measurement's shape, an epoch second or millisecond, a count with thousands dots (581.542.170),
a bare number without the trunk prefix its country writes (581542170 for 0581-54 21 70), a dotted version's shape
(12.17.696) or 13 bare digits with an EAN check digit, is a phone only where a phone word (tel, call, contact...) names
it, as is one written like a decimal (10.969512, as Armenia writes them). An EAN check digit makes a bare 8-digit number a
barcode only in a text with a barcode word (upc, ean, scanned), and a 13-digit Visa number a barcode unless a card or
payment word of many languages names it.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Literal
from urllib.parse import unquote

try:
    import cython

    _IN_C = cython.compiled  # True in the build setup.py makes of this file; collector/redact.pxd types it
except ImportError:  # no Cython installed: plain Python, and the scans below are left to the regexes
    _IN_C = False

__all__ = [
    "COMPILED",
    "IBAN_REGISTRY",
    "PLACEHOLDERS",
    "CustomPattern",
    "Detector",
    "Redactor",
    "iban_ok",
    "luhn_ok",
    "redact",
]

PLACEHOLDERS = (
    "<EMAIL>", "<PHONE>", "<CARD>", "<IBAN>", "<IPV4>", "<IPV6>", "<MAC>",
    "<JWT>", "<API_KEY>", "<SECRET>", "<SSN>", "<NINO>",
    "<AADHAAR>", "<CPF>", "<CNPJ>", "<DNI>", "<NIE>", "<CODICE_FISCALE>", "<PESEL>", "<BSN>", "<PERSONNUMMER>", "<HETU>",
    "<CPR>", "<RESIDENT_ID>", "<NRIC>", "<RRN>", "<TFN>", "<MEDICARE>",
)  # fmt: skip

Detector = Callable[[str], Iterable[tuple[int, int, str]]]
"""A model-based detector: text -> (start, end, label) spans; each becomes ``<LABEL>``."""

Validator = Literal["luhn", "mod97"]


@dataclass(frozen=True)
class CustomPattern:
    """A user's own kind: matches of ``regex`` (passing ``validator``, if any) become ``placeholder``."""

    name: str
    regex: re.Pattern[str]
    placeholder: str
    validator: Validator | None = None


# -- checksums ------------------------------------------------------------------------------------


def luhn_ok(digits: str) -> bool:
    """Whether a string of digits passes the Luhn checksum."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    """Whether an IBAN (no spaces, upper case) passes the ISO 13616 mod-97 check."""
    if not 15 <= len(iban) <= 34 or not iban[:2].isalpha() or not iban[2:4].isdigit():
        return False
    rearranged = iban[4:] + iban[:4]
    try:
        return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1
    except ValueError:
        return False


# (lowest prefix, highest prefix, lengths): ISO/IEC 7812 issuer ranges of cards in circulation.
_IIN_RANGES: tuple[tuple[str, str, frozenset[int]], ...] = tuple(
    (low, high, frozenset(lengths))
    for low, high, lengths in (
        ("4", "4", (16, 19)),  # Visa (13 digits: see _SHORT_IINS)
        ("51", "55", (16,)), ("2221", "2720", (16,)),  # Mastercard
        ("34", "34", (15,)), ("37", "37", (15,)),  # American Express
        ("300", "305", range(14, 20)), ("36", "36", range(14, 20)), ("38", "39", range(14, 20)),  # Diners Club
        ("3528", "3589", range(16, 20)), ("1800", "1800", (15,)), ("2131", "2131", (15,)),  # JCB
        ("2200", "2204", range(16, 20)),  # Mir
        ("6011", "6011", range(16, 20)), ("644", "649", range(16, 20)), ("65", "65", range(16, 20)),  # Discover
        ("62", "62", range(16, 20)),  # UnionPay
        ("50", "50", range(14, 20)), ("56", "69", range(14, 20)),  # Maestro and the rest of 5x/6x
        ("60", "60", (16,)), ("81", "82", (16,)), ("508", "508", (16,)),  # RuPay
        ("9792", "9792", (16,)),  # Troy
        ("9804", "9804", (16,)),  # PROSTIR (Ukraine)
    )
)  # fmt: skip
# 12 and 13 digits are also the length of barcodes and counters: only the issuers that use them.
_SHORT_IINS: tuple[tuple[str, str, frozenset[int]], ...] = tuple(
    (low, high, frozenset(lengths))
    for low, high, lengths in (
        ("4", "4", (13,)),  # Visa, old cards
        ("5018", "5018", (12, 13)), ("5020", "5020", (12, 13)), ("5038", "5038", (12, 13)), ("5893", "5893", (12, 13)),
        ("56", "58", (12, 13)), ("6304", "6304", (12, 13)), ("6390", "6390", (12, 13)), ("6759", "6759", (12, 13)),
        ("6761", "6763", (12, 13)), ("0604", "0604", (12, 13)),  # Maestro
    )
)  # fmt: skip




def _lengths_by_prefix() -> dict[str, frozenset[int]]:
    """Every four-digit prefix of the issuer tables and the card lengths it may have: one lookup, not a scan of the ranges."""
    lengths: dict[str, frozenset[int]] = {}
    shared: dict[frozenset[int], frozenset[int]] = {}  # 4,332 prefixes hold 7 distinct sets: one copy each (3.5 MB → 0.4 MB)
    for table, short in ((_IIN_RANGES, False), (_SHORT_IINS, True)):  # 12 and 13 digits: only the short table
        for low, high, allowed in table:
            chosen = frozenset(n for n in allowed if (n <= 13) == short)
            if not chosen:
                continue
            width = 4 - len(low)
            for prefix in range(int(low) * 10**width, (int(high) + 1) * 10**width):
                key = f"{prefix:04d}"
                found = lengths.get(key, chosen) | chosen
                lengths[key] = shared.setdefault(found, found)
    return lengths


_CARD_LENGTHS = _lengths_by_prefix()


def card_ok(digits: str) -> bool:
    """Whether a digit string is a card number: a real issuer range, its length, and Luhn."""
    return 12 <= len(digits) <= 19 and len(digits) in _CARD_LENGTHS.get(digits[:4], ()) and luhn_ok(digits)


def ean_ok(digits: str) -> bool:
    """Whether a digit string carries a GS1 check digit (EAN-8, EAN-13, UPC-A barcodes)."""
    total = sum((ord(d) - 48) * (3 if i % 2 else 1) for i, d in enumerate(reversed(digits[:-1]), start=1))
    return (10 - total % 10) % 10 == ord(digits[-1]) - 48


def ssn_ok(area: str, group: str, serial: str) -> bool:
    """US SSN rules: area not 000, 666 or 9xx; group not 00; serial not 0000."""
    return area != "000" and area != "666" and area[0] != "9" and group != "00" and serial != "0000"


_NINO_FIRST = frozenset("ABCEGHJKLMNOPRSTWXYZ")  # not D, F, I, Q, U, V
_NINO_SECOND = frozenset("ABCEGHJKLMNPRSTWXYZ")  # nor O
_NINO_NOT_ISSUED = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})


def nino_ok(prefix: str) -> bool:
    """UK NINO prefix rules (HMRC): first letter not D F I Q U V, second not those nor O, and
    BG GB KN NK NT TN ZZ are never issued."""
    prefix = prefix.upper()
    return prefix[0] in _NINO_FIRST and prefix[1] in _NINO_SECOND and prefix not in _NINO_NOT_ISSUED


# National identity numbers: each carries a check digit or letter, which a reading of the same shape passes by chance
# 1 in 10 to 1 in 31, so bare digit runs are looked for only where their country is declared (see _NATIONAL_IDS).
_VERHOEFF_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 3, 4, 0, 6, 7, 8, 9, 5), (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7), (4, 0, 1, 2, 3, 9, 5, 6, 7, 8), (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2), (7, 6, 5, 9, 8, 2, 1, 0, 4, 3), (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)  # fmt: skip
_VERHOEFF_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 5, 7, 6, 2, 8, 3, 0, 9, 4), (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7), (9, 4, 5, 3, 1, 2, 6, 8, 7, 0), (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5), (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)  # fmt: skip


def _weighted(digits: str, weights: Sequence[int]) -> int:
    """The sum of each digit times its weight."""
    return sum((ord(digit) - 48) * weight for digit, weight in zip(digits, weights))


def _date_ok(year: int, month: int, day: int) -> bool:
    """Whether the day exists (a leap day only in a leap year)."""
    if not 1 <= month <= 12 or day < 1:
        return False
    if month == 2:
        return day <= (29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28)
    return day <= (30 if month in (4, 6, 9, 11) else 31)


def aadhaar_ok(digits: str) -> bool:
    """India's Aadhaar (UIDAI): 12 digits, not opening with 0 or 1, Verhoeff check digit."""
    if len(digits) != 12 or digits[0] in "01" or digits == digits[::-1]:  # UIDAI issues no palindrome
        return False
    check = 0
    for position, char in enumerate(reversed(digits)):
        check = _VERHOEFF_D[check][_VERHOEFF_P[position % 8][ord(char) - 48]]
    return check == 0


def cpf_ok(digits: str) -> bool:
    """Brazil's CPF: 11 digits, not all alike, two mod-11 check digits."""
    if len(digits) != 11 or digits == digits[0] * 11:
        return False
    first = _weighted(digits[:9], range(10, 1, -1)) * 10 % 11 % 10
    second = _weighted(digits[:10], range(11, 1, -1)) * 10 % 11 % 10
    return ord(digits[9]) - 48 == first and ord(digits[10]) - 48 == second


_CNPJ_WEIGHTS = (6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2)


def cnpj_ok(digits: str) -> bool:
    """Brazil's CNPJ: 14 digits, not all alike, two mod-11 check digits."""
    if len(digits) != 14 or digits == digits[0] * 14:
        return False
    for size in (12, 13):
        remainder = _weighted(digits[:size], _CNPJ_WEIGHTS[13 - size :]) % 11
        if ord(digits[size]) - 48 != (0 if remainder < 2 else 11 - remainder):
            return False
    return True


_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def dni_ok(number: str) -> bool:
    """Spain's DNI (8 digits and a control letter) or NIE (X, Y or Z, 7 digits and the letter), in any case."""
    number = number.upper()
    if len(number) != 9 or not number[1:8].isdigit() or not number[8].isalpha():
        return False
    lead = number[0]
    if lead in "XYZ":
        lead = str("XYZ".index(lead))
    elif not lead.isdigit():
        return False
    return _DNI_LETTERS[int(lead + number[1:8]) % 23] == number[8]


_FISCAL_ODD = {char: value for chars, value in (
    ("0A", 1), ("1B", 0), ("2C", 5), ("3D", 7), ("4E", 9), ("5F", 13), ("6G", 15), ("7H", 17), ("8I", 19), ("9J", 21),
    ("K", 2), ("L", 4), ("M", 18), ("N", 20), ("O", 11), ("P", 3), ("Q", 6), ("R", 8), ("S", 12), ("T", 14), ("U", 16),
    ("V", 10), ("W", 22), ("X", 25), ("Y", 24), ("Z", 23),
) for char in chars}  # fmt: skip


def fiscal_code_ok(code: str) -> bool:
    """Italy's codice fiscale: 16 characters in its letters-and-digits pattern, and its check letter (any case)."""
    code = code.upper()
    if _FISCAL_CODE_SHAPE.fullmatch(code) is None:
        return False
    total = 0
    for position, char in enumerate(code[:15]):
        if position % 2 == 0:
            total += _FISCAL_ODD[char]
        else:
            total += ord(char) - (48 if char.isdigit() else 65)
    return chr(65 + total % 26) == code[15]


_PESEL_WEIGHTS = (1, 3, 7, 9, 1, 3, 7, 9, 1, 3)


def pesel_ok(digits: str) -> bool:
    """Poland's PESEL: 11 digits, a birth date (its month carries the century), check digit of weights 1-3-7-9."""
    if len(digits) != 11 or not digits.isdigit():
        return False
    month = int(digits[2:4])
    century = (1900, 2000, 2100, 2200, 1800)[month // 20]
    if not _date_ok(century + int(digits[:2]), month % 20, int(digits[4:6])):
        return False
    return (10 - _weighted(digits[:10], _PESEL_WEIGHTS) % 10) % 10 == ord(digits[10]) - 48


def bsn_ok(digits: str) -> bool:
    """The Netherlands' BSN: 9 digits passing the 11-proof (weights 9..2, the last -1)."""
    if len(digits) != 9 or digits[:8] == "00000000":
        return False
    return (_weighted(digits[:8], range(9, 1, -1)) - (ord(digits[8]) - 48)) % 11 == 0


def personnummer_ok(digits: str) -> bool:
    """Sweden's personnummer or samordningsnummer (day + 60): YYMMDDNNNN or YYYYMMDDNNNN, a date, Luhn on the last 10."""
    if len(digits) == 12:
        year, digits = int(digits[:4]), digits[2:]
        if not 1800 <= year <= 2099:
            return False
    elif len(digits) == 10:
        year = 2000 + int(digits[:2])  # any century: a leap day only in a year that ends in a leap pair
    else:
        return False
    day = int(digits[4:6])
    return _date_ok(year, int(digits[2:4]), day - 60 if day > 60 else day) and luhn_ok(digits)


_HETU_CENTURIES = {"+": 1800, "-": 1900, "U": 1900, "V": 1900, "W": 1900, "X": 1900, "Y": 1900,
                   "A": 2000, "B": 2000, "C": 2000, "D": 2000, "E": 2000, "F": 2000}  # fmt: skip
_HETU_CHECKS = "0123456789ABCDEFHJKLMNPRSTUVWXY"


def hetu_ok(code: str) -> bool:
    """Finland's henkilötunnus: DDMMYY, a century sign, an individual number 002-899 and its mod-31 check (any case)."""
    code = code.upper()
    century = _HETU_CENTURIES.get(code[6:7]) if len(code) == 11 else None
    if century is None or not (code[:6].isdigit() and code[7:10].isdigit()) or not 2 <= int(code[7:10]) <= 899:
        return False
    if not _date_ok(century + int(code[4:6]), int(code[2:4]), int(code[:2])):
        return False
    return _HETU_CHECKS[int(code[:6] + code[7:10]) % 31] == code[10]


_CPR_WEIGHTS = (4, 3, 2, 7, 6, 5, 4, 3, 2, 1)


def cpr_ok(digits: str) -> bool:
    """Denmark's CPR: DDMMYY and four digits, a date and the mod-11 check of the numbers issued before 2007."""
    if len(digits) != 10 or not _date_ok(2000, int(digits[2:4]), int(digits[:2])):
        return False
    return _weighted(digits, _CPR_WEIGHTS) % 11 == 0


_RESIDENT_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def resident_id_ok(code: str) -> bool:
    """China's resident identity number: 6-digit area, birth date YYYYMMDD, 3 digits and the ISO 7064 mod 11-2 check (0-9, X)."""
    code = code.upper()
    if len(code) != 18 or not code[:17].isdigit() or code[0] not in "12345678":
        return False
    if not (1900 <= int(code[6:10]) <= 2099 and _date_ok(int(code[6:10]), int(code[10:12]), int(code[12:14]))):
        return False
    return "10X98765432"[_weighted(code[:17], _RESIDENT_WEIGHTS) % 11] == code[17]


_NRIC_WEIGHTS = (2, 7, 6, 5, 4, 3, 2)
_NRIC_CHECKS = {"S": (0, "JZIHGFEDCBA"), "T": (4, "JZIHGFEDCBA"), "F": (0, "XWUTRQPNMLK"), "G": (4, "XWUTRQPNMLK"),
                "M": (3, "XWUTRQPNJLK")}  # fmt: skip


def nric_ok(code: str) -> bool:
    """Singapore's NRIC or FIN: S, T, F, G or M, 7 digits and the check letter (any case)."""
    code = code.upper()
    series = _NRIC_CHECKS.get(code[:1]) if len(code) == 9 else None
    if series is None or not code[1:8].isdigit():
        return False
    offset, letters = series
    return letters[(offset + _weighted(code[1:8], _NRIC_WEIGHTS)) % 11] == code[8]


_RRN_WEIGHTS = (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)
_RRN_CENTURIES = {"9": 1800, "0": 1800, "1": 1900, "2": 1900, "5": 1900, "6": 1900, "3": 2000, "4": 2000, "7": 2000, "8": 2000}


def rrn_ok(digits: str) -> bool:
    """Korea's resident registration number: YYMMDD, a sex/century digit, 5 digits and the mod-11 check digit (issued
    until October 2020)."""
    if len(digits) != 13 or not digits.isdigit():
        return False
    if not _date_ok(_RRN_CENTURIES[digits[6]] + int(digits[:2]), int(digits[2:4]), int(digits[4:6])):
        return False
    return (11 - _weighted(digits[:12], _RRN_WEIGHTS) % 11) % 10 == ord(digits[12]) - 48


_TFN_WEIGHTS = (1, 4, 3, 7, 5, 8, 6, 9, 10)


def tfn_ok(digits: str) -> bool:
    """Australia's tax file number: 9 digits whose weighted sum (1, 4, 3, 7, 5, 8, 6, 9, 10) is a multiple of 11."""
    return len(digits) == 9 and digits != "000000000" and _weighted(digits, _TFN_WEIGHTS) % 11 == 0


_MEDICARE_WEIGHTS = (1, 3, 7, 9, 1, 3, 7, 9)


def medicare_ok(digits: str) -> bool:
    """Australia's Medicare card number: 10 digits (11 with the holder's reference), opening with 2-6, the ninth the
    check digit of weights 1-3-7-9, an issue number 1-9 after it."""
    if len(digits) not in (10, 11) or digits[0] not in "23456" or digits[9] == "0" or (len(digits) == 11 and digits[10] == "0"):
        return False
    return _weighted(digits[:8], _MEDICARE_WEIGHTS) % 10 == ord(digits[8]) - 48


# -- national identity numbers --------------------------------------------------------------------

# A run of digits with the separators these numbers are written with, opening after no word character or after one
# letter that opens the number (X1234567L), and ending before no word character or before one letter (12345678Z); or
# Finland's henkilötunnus with a letter for its century sign (131052A308T), which would end a run.
_ID_RUN = re.compile(
    r"[0-9](?:(?<![\w+][0-9])|(?<=(?<!\w)[A-Za-z][0-9]))"
    r"(?:(?P<hetu>[0-9]{5}[A-FU-Ya-fu-y][0-9]{3}[0-9A-Ya-y](?!\w))|[0-9 ./+-]*[0-9](?=(?:-?[A-Za-z])?(?!\w)))"
)
_ID_SEPARATORS = str.maketrans("", "", " ./+-")
_NOT_SPACE = re.compile(r"[^ ]+")
_SHAPE_DIGITS = str.maketrans("123456789", "000000000")  # a run's form: its digits as 0, its separators as they are
# Italy's codice fiscale (one of _TOKENS): six letters, then its digits lead, as letters would be tried at nearly every position.
_FISCAL_CODE = re.compile(r"[0-9](?<=(?<!\w)[A-Za-z]{6}[0-9])[0-9][A-EHLMPRSTa-ehlmprst][0-9]{2}[A-Za-z][0-9]{3}[A-Za-z](?!\w)")
# Its letters-and-digits pattern, digits replaced by letters too (omocodia), upper case.
_FISCAL_CODE_SHAPE = re.compile(r"[A-Z]{6}[0-9L-V]{2}[ABCDEHLMPRST][0-9L-V]{2}[A-Z][0-9L-V]{3}[A-Z]")


@dataclass(frozen=True)
class _IdKind:
    """One national number: its placeholder, its check, the country whose declaration finds it bare (None: found
    always, its form is strong enough), the words that name it, and whether its check reads the separators too."""

    placeholder: str
    check: Callable[[str], bool]
    region: str | None = None
    words: frozenset[str] = frozenset()
    raw: bool = False


_CPF = _IdKind("<CPF>", cpf_ok)
_CPF_BARE = _IdKind("<CPF>", cpf_ok, "BR", frozenset({"cpf"}))
_CNPJ = _IdKind("<CNPJ>", cnpj_ok)
_CNPJ_BARE = _IdKind("<CNPJ>", cnpj_ok, "BR", frozenset({"cnpj"}))
_DNI = _IdKind("<DNI>", dni_ok)
_NIE = _IdKind("<NIE>", dni_ok)
_NRIC = _IdKind("<NRIC>", nric_ok)
_RESIDENT_ID = _IdKind("<RESIDENT_ID>", resident_id_ok)
_RRN = _IdKind("<RRN>", rrn_ok)
_RRN_BARE = _IdKind("<RRN>", rrn_ok, "KR", frozenset({"rrn", "주민등록번호", "주민번호"}))
_PESEL = _IdKind("<PESEL>", pesel_ok, "PL", frozenset({"pesel"}))
_BSN = _IdKind("<BSN>", bsn_ok, "NL", frozenset({"bsn", "burgerservicenummer", "sofinummer"}))
_PERSONNUMMER = _IdKind("<PERSONNUMMER>", personnummer_ok, "SE", frozenset({"personnummer", "personnr", "samordningsnummer"}))
_CPR = _IdKind("<CPR>", cpr_ok, "DK", frozenset({"cpr", "cprnr", "personnummer"}))
_AADHAAR = _IdKind("<AADHAAR>", aadhaar_ok, "IN", frozenset({"aadhaar", "aadhar", "uidai"}))
_TFN = _IdKind("<TFN>", tfn_ok, "AU", frozenset({"tfn"}))
_MEDICARE = _IdKind("<MEDICARE>", medicare_ok, "AU", frozenset({"medicare"}))
_HETU_KIND = _IdKind("<HETU>", hetu_ok, raw=True)  # its century sign is a separator

# How each number is written: its groups of digits and their separators ("3.3.3-2"), "L" for a letter that opens or
# closes it. The strong forms (a separator pattern or letters of their own, or 18 digits with a birth date) are found
# always; the bare and spaced ones pass a check digit 1 in 10 or 11 by chance, so only where their country is declared
# in privacy.regions or a word of their own names them.
_ID_FORMS: dict[str, tuple[_IdKind, ...]] = {
    "3.3.3-2": (_CPF,), "9-2": (_CPF,), "11": (_CPF_BARE, _PESEL, _MEDICARE),
    "2.3.3/4-2": (_CNPJ,), "14": (_CNPJ_BARE,),
    "8L": (_DNI,), "8-L": (_DNI,), "L7L": (_NIE, _NRIC),
    "18": (_RESIDENT_ID,), "17L": (_RESIDENT_ID,),
    "6-7": (_RRN,), "13": (_RRN_BARE,),
    "6-4": (_PERSONNUMMER, _CPR, _HETU_KIND), "6+4": (_PERSONNUMMER, _HETU_KIND), "6-3L": (_HETU_KIND,), "6+3L": (_HETU_KIND,),
    "8-4": (_PERSONNUMMER,), "10": (_PERSONNUMMER, _CPR, _MEDICARE),
    "12": (_PERSONNUMMER, _AADHAAR), "4 4 4": (_AADHAAR,), "4-4-4": (_AADHAAR,),
    "9": (_BSN, _TFN), "4.2.3": (_BSN,), "3 3 3": (_TFN,),
    "4 5 1": (_MEDICARE,), "4 5 1 1": (_MEDICARE,), "4 5 1-1": (_MEDICARE,),
}  # fmt: skip
# The same forms as a run reads through _SHAPE_DIGITS ("000.000.000-00"), so a run's form is looked up, not worked out.
_NATIONAL_IDS = {re.sub(r"\d+", lambda group: "0" * int(group.group()), shape): kinds for shape, kinds in _ID_FORMS.items()}
# The forms found whatever is around them: one may be cut out of a run at a space ("CPF 123.456.789-09 2 itens").
_STRONG_FORMS = frozenset(shape for shape, kinds in _NATIONAL_IDS.items() if all(kind.region is None for kind in kinds))
# Every word that names a number found bare: one look at the words before a run for all of its kinds.
_ID_NAMES = frozenset(word for kinds in _ID_FORMS.values() for kind in kinds for word in kind.words)
_LONGEST_FORM = max(len(shape) for shape in _NATIONAL_IDS)


def _id_runs(text: str) -> list[tuple[int, int, bool]]:
    """(start, end, whether it is a lettered HETU) of each _ID_RUN match that could be a form: 7 characters or more, as
    a NIE's digits are."""
    runs = []
    for match in _ID_RUN.finditer(text):
        hetu = match.group("hetu") is not None
        if hetu or match.end() - match.start() >= 7:
            runs.append((match.start(), match.end(), hetu))
    return runs


def _id_shape(text: str, start: int, end: int, lead: bool, tail: int) -> str:
    """The form of the run text[start:end]: its digits as 0, its separators, "L" for a letter before it (``lead``) and
    after it (``tail``: 1 for "Z", 2 for "-Z")."""
    return ("L" if lead else "") + text[start:end].translate(_SHAPE_DIGITS) + ("", "L", "-L")[tail]


def _name_before(text: str, at: int) -> str:
    """The word of _ID_NAMES among the three words (runs of letters) in the 40 characters before ``at`` with no digit
    between (as ``_phone_named`` looks for a phone word), or ""."""
    low = at - 40 if at > 40 else 0
    end = at
    for _ in range(3):
        while end > low and not text[end - 1].isalpha():
            if text[end - 1].isdecimal():
                return ""
            end -= 1
        if end == low:
            return ""
        start = end - 1
        while start > low and text[start - 1].isalpha():
            start -= 1
        word = text[start:end].lower()
        if word in _ID_NAMES:
            return word
        end = start
    return ""


# -- patterns -------------------------------------------------------------------------------------

_EMAIL_LOCAL = frozenset("!#$%&'*+-./=?^_`{|}~")  # RFC 5322 atext, plus every Unicode letter and digit
_ENCODED_LOCAL = frozenset("!#$'*+-.^_~")  # "%" opens an escape, which _encoded_local_start decodes
_EMAIL_DOMAIN = re.compile(r"(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_](?:[\w-]{0,61}[^\W_])?")
# An escape may be encoded again, up to _MAX_ENCODINGS times in all: %40, %2540, %252540 all end as "@".
_MAX_ENCODINGS = 4
_AT = re.compile(r"@|%(?:25){0,3}40", re.IGNORECASE)
# A URL-encoded address's domain: its dots may be encoded too (example%2Ecom).
_ENCODED_DOMAIN = re.compile(r"(?:[^\W_](?:[\w-]{0,61}[^\W_])?(?:\.|%(?:25){0,3}2[Ee]))+[^\W\d_](?:[\w-]{0,61}[^\W_])?")
_ADDRESS_LITERAL = re.compile(r"\[(?:IPv6:[0-9A-Fa-f:.]{2,45}|\d{1,3}(?:\.\d{1,3}){3})\]")  # RFC 5321: jane@[192.0.2.1]

# Each pattern opens with a plain character class, so the regex engine skips straight to where a
# match can start; the boundary check that would lead it is a lookbehind after that first character.
_IPV4 = re.compile(r"\d(?<![\w.]\d)\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\w]|\.\d)", re.ASCII)
# A run of hex, colons and dots that holds "::" or several colons: IPv6 candidates (checked by ipaddress).
_IPV6_RUN = re.compile(r"[0-9A-Za-z:.]+(?:%[\w.]+)?", re.ASCII)
_MAC = re.compile(
    r"[0-9A-Fa-f](?<![\w:.-][0-9A-Fa-f])(?:[0-9A-Fa-f]([:-])(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}|[0-9A-Fa-f]{3}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4})(?![\w:-]|\.\w)",
    re.ASCII,
)
_JWT = re.compile(r"eyJ(?<![\w-]eyJ)[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*", re.ASCII)
_API_KEY = re.compile(
    r"(?:"
    r"(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA|ASCA)[A-Z0-9]{16}"  # AWS key ids
    r"|gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{60,255}"  # GitHub
    r"|glpat-[A-Za-z0-9_-]{20,}"  # GitLab
    r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}|whsec_[A-Za-z0-9]{24,}"  # Stripe
    r"|xox[abposre]-[A-Za-z0-9-]{10,}"  # Slack tokens
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API keys
    r"|sk-(?:proj-|ant-[a-z0-9]{2,8}-)?[A-Za-z0-9_-]{20,}"  # OpenAI, Anthropic
    r"|SG\.[A-Za-z0-9_-]{16,32}\.[A-Za-z0-9_-]{16,64}"  # SendGrid
    r"|npm_[A-Za-z0-9]{36}|pypi-AgE[A-Za-z0-9_-]{50,}"  # npm, PyPI
    r"|SK[0-9a-f]{32}"  # Twilio API keys
    r")(?![\w-])"
    r"|https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+"
    r"|-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----[\s\S]*?(?:-----END (?:[A-Z]+ )*PRIVATE KEY-----|$)",
    re.ASCII,
)
# The password runs to the authority's last "@" (one typed into a log unencoded may hold "@" and "#").
_URL_CREDENTIALS = re.compile(r"(?<=://)[^\s/?#@:]+:[^\s/?]*(?=@[^\s/?#@]*(?:[/?#\s]|$))", re.ASCII)
_SECRET_NAMES = (
    r"access_?token|refresh_?token|id_?token|auth_?token|token|api_?key|apikey|x-api-key|secret|client_?secret"
    r"|secret_?key|aws_secret_access_key|private_?key|password|passwd|pwd|passphrase|credentials?|session_?id"
    r"|sessionid|sid|signature|sig|x-amz-signature|x-amz-credential|x-amz-security-token|auth|authorization"
)
# key=value anywhere for names that only ever hold secrets; "key" and "code" only inside a URL query.
_SECRET_KEYS = frozenset(_SECRET_NAMES.replace("_?", "_").replace("s?", "s").split("|")) | frozenset(
    name.replace("_", "") for name in _SECRET_NAMES.replace("_?", "_").split("|")
) | {"credential"}
_QUERY_KEYS = frozenset({"key", "code", "k"})
_EQUALS = re.compile(r"=|%3D", re.IGNORECASE)
_KEY_TAIL = re.compile(r"[\w-]+$")
# A value ends at a space, a quote, or a separator that ends it ("&lang=", ", ", ";path="): a generated password
# holds "&", "#", "," and ";" too.
_SECRET_VALUE = re.compile(r"(?:[^\s&,;\"'<>]|[&,;](?![&,;]*(?:[\s\"'<>]|$)|[\w.-]+=))+")
# Outside markup "<" and ">" are a password's characters too ("ab<cd>ef"); only a closing tag ("</p>") ends it there.
_SECRET_VALUE_TEXT = re.compile(r"(?:[^\s&,;\"'<]|<(?!/)|[&,;](?![&,;]*(?:[\s\"']|</|$)|[\w.-]+=))+")
# A tag: in a text that has one before a secret's name, "<" and ">" are markup (a password's own are &lt; &gt;).
_TAG = re.compile(r"</?[A-Za-z][\w:.-]*(?:\s[^<>]*)?/?>")
# An XML or HTML element named after a secret: <password>hunter2</password>; its text runs to its own closing tag.
_SECRET_ELEMENT = re.compile(rf"<({_SECRET_NAMES})(?:\s[^<>]*)?>([^\r\n]+?)</\1\s*>", re.IGNORECASE)
# A form field named as a secret: <input name="password" value="...">, {"name": "api_key", "value": "..."}. The name
# ends in a secret's name as a word (new_password, user[password], confirmPassword); type="password" is one whatever its name.
_FORM_TAG = re.compile(r"<[A-Za-z][\w:.-]*\s[^<>]*>")
_ATTRIBUTE = re.compile(r"([\w:.-]+)\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s\"'=<>`]+))")
_FIELD_NAME = re.compile(rf"(?:^|[^a-z0-9])(?:{_SECRET_NAMES})\]?$")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_FIELD_VALUE = r"""(?:"([^"\r\n]*)"|'([^'\r\n]*)'|([^\s"',}\]]+))"""
_FORM_JSON = re.compile(
    rf"""(["'])name\1\s*:\s*(["'])([^"'\r\n]{{1,64}})\2\s*,\s*(["'])value\4\s*:\s*{_FIELD_VALUE}"""
    rf"""|(["'])value\8\s*:\s*{_FIELD_VALUE}\s*,\s*(["'])name\12\s*:\s*(["'])([^"'\r\n]{{1,64}})\13""",
    re.IGNORECASE,
)
# The value runs to the quote that opened it: "pa'ss" is one password.
_SECRET_JSON = re.compile(rf"[\"']((?:{_SECRET_NAMES}))[\"']\s*:\s*(?:\"([^\"]+)\"|'([^']+)')", re.IGNORECASE)
# How every _SECRET_NAMES name ends, then its closing quote and colon: the quote leads, so the engine skips to quotes.
_SECRET_JSON_HINT = re.compile(r"[\"'](?<=(?:en|ey|et|rd|wd|se|ls|al|id|re|ig|th|on)[\"'])\s*:", re.IGNORECASE)
# RFC 6750's token characters ("_" included: its own example is mF_9.B5f-4.1JqM); a short one needs a digit.
_TOKEN_CHARS = r"[A-Za-z0-9._~+/=-]"
# A token68 is not the name of a name=value parameter ("Token token=abc"): that is _secret_params' to find.
_NOT_PARAM = r"(?![A-Za-z0-9_-]+=[^=\s,;])"
# The boundary is a lookbehind after each scheme's first letter, so the engine skips to a "B", "b" or "T" (see _IPV4).
_BEARER = re.compile(
    r"(?:B(?<![\w-]B)earer|b(?<![\w-]b)earer|B(?<![\w-]B)asic|T(?<![\w-]T)oken)"
    rf"\s+{_NOT_PARAM}((?={_TOKEN_CHARS}*\d){_TOKEN_CHARS}{{8,}}|{_TOKEN_CHARS}{{16,}})", re.ASCII
)
# Negotiate (RFC 4559) and NTLM carry a base64 token as Bearer does; apart, as "n" would lead the engine to most words.
_NEGOTIATE = re.compile(
    r"(?<![\w-])(?:Negotiate|negotiate|NTLM|ntlm)"
    rf"\s+{_NOT_PARAM}((?={_TOKEN_CHARS}*\d){_TOKEN_CHARS}{{8,}}|{_TOKEN_CHARS}{{16,}})", re.ASCII
)
# Whatever the scheme, the token68 of an Authorization header is a credential (RFC 9110: "ApiKey k", "Splunk k").
_AUTH_HEADER = re.compile(
    rf"(?<![\w-])(?:proxy-)?authorization\s*:\s*[A-Za-z][\w.-]*\s+{_NOT_PARAM}({_TOKEN_CHARS}{{8,}})", re.IGNORECASE | re.ASCII
)
# RFC 7616 Digest: its parameters follow the scheme; the nonces and the response are what a replay needs.
_DIGEST = re.compile(r"(?<![\w-])digest\s+(?=[\w-]+\s*=)", re.IGNORECASE)
_DIGEST_PARAM = re.compile(r"(?<![\w-])(?:c?nonce|response)\s*=\s*(?:\"([^\"\r\n]+)\"|([^\s,\"]+))", re.IGNORECASE)
# A quoted value of a secret parameter: password="hunter 2", token='abc'.
_QUOTED_VALUE = re.compile(r"\"([^\"\r\n]+)\"|'([^'\r\n]+)'")
# RFC 7617: "Basic" then base64 of user-id ":" password; what it decodes to decides (not "Basic usage", "Basic plan").
_BASIC = re.compile(r"(?<![\w-])(?:Basic|basic|BASIC)\s+([A-Za-z0-9+/]{4,}={0,2})(?![\w+/=-])", re.ASCII)
# "name: value" (a header, YAML, a log) for the names that never mean anything but a secret.
_SECRET_COLON = re.compile(
    r"(?<![\w-])(?:password|passwd|passphrase|api_?key|apikey|x-api-key|client_?secret|secret_?key|aws_secret_access_key"
    r"|private_?key|access_?token|refresh_?token|auth_?token|id_?token)\s*:\s*[\"']?((?:[^\s\"'<>,;]|[,;](?![,;]*(?:[\s\"'<>]|$)|[\w.-]+[=:]))+)",
    re.IGNORECASE,
)
# _SECRET_COLON's value where "<" and ">" are no markup (see _SECRET_VALUE_TEXT).
_SECRET_COLON_TEXT = re.compile(r"(?:[^\s\"',;<]|<(?!/)|[,;](?![,;]*(?:[\s\"']|</|$)|[\w.-]+[=:]))+")
# How every _SECRET_COLON name ends (passwo-rd, passw-d, passphra-se, k-ey, secr-et, tok-en) before its colon: most
# texts with a ":" have none, and the case-blind alternation with its lookbehind costs a try at every position.
_SECRET_COLON_HINT = re.compile(r"(?:rd|wd|se|ey|et|en)\s*:", re.IGNORECASE)
# Any case ("de89 3704 ..." is as much an account as "DE89 3704 ..."); the country's length and mod-97 decide.
_IBAN = re.compile(r"[A-Za-z](?<![^\W\d_][A-Za-z])[A-Za-z]\d\d(?:[ ]?[A-Za-z0-9]{4}){2,7}(?:[ ]?[A-Za-z0-9]{1,3})?(?![A-Za-z0-9])")
# Each country's IBAN length in the ISO 13616 registry (SWIFT, 2025). Only a code of its country's length is an
# IBAN: mod-97 alone passes 1 in 97.
IBAN_REGISTRY: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29,
    "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24,
    "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
    "YE": 30,
}  # fmt: skip
# The national IBANs in use outside the registry (Africa's BCEAO/BEAC zones, IR, DZ...).
_IBAN_LENGTHS: dict[str, int] = {
    **IBAN_REGISTRY,
    "AO": 25, "BF": 28, "BJ": 28, "CF": 27, "CG": 27, "CI": 28, "CM": 27, "CV": 25, "DZ": 26, "GA": 27, "GQ": 27,
    "GW": 25, "IR": 26, "KM": 27, "MA": 28, "MG": 27, "ML": 28, "MZ": 25, "NE": 28, "SN": 28, "TD": 27, "TG": 28,
}  # fmt: skip
# Any case: "ab 12 34 56 c" is as much a NINO as "AB 12 34 56 C" (nino_ok weighs the prefix in upper case).
_NINO = re.compile(r"[A-Za-z](?<!\w[A-Za-z])[A-Za-z] ?\d\d ?\d\d ?\d\d ?[A-Da-d](?!\w)")



# A version is named before it ("firmware 10.4.2.1", "fw: 2024.11.27.1"): an IPv4 or phone shape after this is a version.
_VERSION_BEFORE = re.compile(
    r"(?<![\w-])(?:firmware|fw|version|ver|build|release|rel|rev|revision|sw|software|bios|kernel|os)\s*[:=]?\s*v?$|(?<![\w-])v$",
    re.IGNORECASE,
)
_DOTTED = re.compile(r"\d+(?:\.\d+){2,}")
_DOTTED_PARTS = re.compile(r"\d+(?:\.\d+)+")
_DOTTED_SHORT = re.compile(r"\d{1,3}(?:\.\d{1,3}){2,}")
# What follows a version and nothing else: a PEP 440 local part (+cu121) or a pre-release (-rc1, .dev0, -SNAPSHOT).
_VERSION_AFTER = re.compile(r"\+[A-Za-z]|[-.]?(?:rc|alpha|beta|dev|pre|post|snapshot)(?![A-Za-z])", re.IGNORECASE)
_COMPACT_DATE = re.compile(r"(?:19[7-9]\d|20\d\d)(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])")


def _phone_or_ipv4(found: list[tuple[int, int, str]]) -> bool:
    """Whether any finding is one _measurement may take back: most texts have none, so no call per finding."""
    for finding in found:
        if finding[2] == "<PHONE>" or finding[2] == "<IPV4>":
            return True
    return False


def _measurement(text: str, finding: tuple[int, int, str]) -> bool:
    """An IPv4 or phone finding that is a version named or marked as one (fw 1.2.3, 1.2.3-rc1), or a phone that is a
    compact date (20251127)."""
    start, end, placeholder = finding
    if placeholder != "<IPV4>" and placeholder != "<PHONE>":
        return False
    if placeholder == "<PHONE>" and end - start == 8 and _COMPACT_DATE.fullmatch(text, start, end) is not None:
        return (start == 0 or not text[start - 1].isalnum()) and (end == len(text) or not text[end].isalnum())
    while start > 0 and (text[start - 1].isdecimal() or text[start - 1] == "."):
        start -= 1
    while end < len(text) and (text[end].isdecimal() or (text[end] == "." and text[end + 1:end + 2].isdecimal())):
        end += 1
    if _DOTTED_PARTS.fullmatch(text, start, end) is None:  # most findings: no dot, so no version
        # A named version with its build after "-" ("kernel 5.15.0-1051", "firmware 4.19.0-1024").
        dotted = _DOTTED.match(text, start, end)
        return dotted is not None and text[dotted.end()] == "-" and _VERSION_BEFORE.search(text, max(0, start - 24), start) is not None
    if _VERSION_AFTER.match(text, end) is not None:  # a suffix marks two parts as a version too (1605.934.dev0)
        return True
    return _DOTTED.fullmatch(text, start, end) is not None and _VERSION_BEFORE.search(text, max(0, start - 24), start) is not None


class _Alternation:
    """A regex of branches compiled for the branches a text can hold. A branch that cannot match is
    left out, so the engine does not try it at every position; the matches are the same."""

    def __init__(self, head: str, branches: Sequence[str], flags: int = 0, narrow: tuple[int, str] = (0, "")) -> None:
        self._head = head
        self._branches = tuple(branches)
        self._flags = flags
        # (bits, head): without any of these branches the first character is one of a narrower class.
        self._narrow = narrow
        self._compiled: dict[int, re.Pattern[str]] = {}

    def __call__(self, mask: int) -> re.Pattern[str]:
        """The regex of the branches whose bit (1 << index) is set in ``mask``."""
        pattern = self._compiled.get(mask)
        if pattern is None:
            chosen = "|".join(branch for index, branch in enumerate(self._branches) if mask >> index & 1)
            bits, narrow = self._narrow
            head = narrow if bits and not mask & bits else self._head
            pattern = self._compiled[mask] = re.compile(f"{head}(?:{chosen})", self._flags)
        return pattern


_TOKENS = _Alternation("", [
    f"(?P<{name}>{pattern.pattern})".replace("([:-])(?:[0-9A-Fa-f]{2}\\1)", "(?P<macsep>[:-])(?:[0-9A-Fa-f]{2}(?P=macsep))")
    for name, pattern in (("jwt", _JWT), ("api_key", _API_KEY), ("mac", _MAC), ("ipv4", _IPV4), ("iban", _IBAN), ("nino", _NINO),
                          ("fiscal", _FISCAL_CODE))
])  # fmt: skip
_JWT_BIT, _API_KEY_BIT, _MAC_BIT, _IPV4_BIT, _IBAN_BIT, _NINO_BIT, _FISCAL_BIT = 1, 2, 4, 8, 16, 32, 64
# What every API key holds (the AWS ids are A??A): a text with none of these holds no key.
_API_KEY_HINT = re.compile(r"A[A-Z][A-Z]A|gh|github_pat_|glpat-|k_|whsec_|xox|AIza|sk-|SG\.|npm_|pypi-|SK|hooks|-----BEGIN")
# A middle of a MAC ("0:1a:2b:" or ".2b3c."); each hint here opens with a rare character, which the engine skips to.
_MAC_HINT = re.compile(r"[:.-](?:(?<=[:-])[0-9A-Fa-f]{2}[:-][0-9A-Fa-f]{2}[:-]|(?<=\.)[0-9A-Fa-f]{4}\.)")
# How a NINO ends: its digits lead, as letters in any case before them would be tried at nearly every position; they
# open a run of digits (a letter or a space is before them), so a scan weighs only a run's first digit.
_NINO_HINT = re.compile(r"\d(?<!\d\d)\d ?\d\d ?\d\d ?[A-Da-d](?!\w)")
# The digits of a codice fiscale after its letters (its first six are the token's to check).
_FISCAL_HINT = re.compile(r"[0-9](?<=[A-Za-z][0-9])[0-9][A-EHLMPRSTa-ehlmprst][0-9]{2}[A-Za-z][0-9]{3}[A-Za-z]")
_IBAN_HINT = re.compile(r"(?<![^\W\d_])[A-Za-z][A-Za-z]\d\d(?:[ ]?[A-Za-z0-9]{4}){2}")  # how an IBAN opens, in any case


def _token_mask(text: str, has_digit: bool) -> int:
    """Which of _TOKENS' branches could match in ``text``: cheap necessary conditions."""
    if _IN_C:
        return _token_mask_scan(text, has_digit)
    mask = _JWT_BIT if "eyJ" in text else 0
    if _API_KEY_HINT.search(text) is not None:
        mask |= _API_KEY_BIT
    dots = text.count(".")
    if (dots >= 2 or text.count(":") >= 5 or text.count("-") >= 5) and _MAC_HINT.search(text) is not None:
        mask |= _MAC_BIT
    if has_digit:
        if dots >= 3:
            mask |= _IPV4_BIT
        if _NINO_HINT.search(text) is not None:
            mask |= _NINO_BIT
        if _FISCAL_HINT.search(text) is not None:
            mask |= _FISCAL_BIT
        if _IBAN_HINT.search(text) is not None:
            mask |= _IBAN_BIT
    return mask


# What is never a number of a person: masked before digit runs are looked for.
_LOOKALIKES = _Alternation(r"[0-9A-Fa-f+-]", [
    r"(?<=[0-9A-Fa-f])[0-9A-Fa-f]{7}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}",  # UUIDs
    r"(?<![\w][0-9A-Fa-f])(?<=[0-9A-Fa-f])(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{15,}(?!\w)",  # hex digests
    r"(?<![\d.][12])(?<=[12])\d{3}(?P<ymd>[-/.])(?:0?[1-9]|1[0-2])(?P=ymd)(?:0?[1-9]|[12]\d|3[01])(?![-/.]?\d)",  # 2026-11-26
    r"(?<![\d.]\d)(?<=[0-3])\d?(?P<dmy>[-/.])(?:0?[1-9]|[12]\d|3[01])(?P=dmy)(?:[12]\d{3}|\d{2})(?![-/.]?\d)",  # 26.11.2026
    r"(?<![\d.+]\d)(?<=\d)\d?:\d{2}(?::\d{2})?(?:[.,]\d+)?(?![\d:])",  # 12:30:45.123
    r"(?<![\w.][+\-\d])(?:(?<=[+-])\d+|(?<=\d)\d*)\.\d+(?![\w.])",  # 48.856613, +2.352222, -0.5
    r"(?<![\w.+]\d)(?<=\d)\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\w]|\.\d)",  # IPv4: its own kind
], re.ASCII, narrow=(1 | 2, r"[0-9+-]"))  # fmt: skip
# What a hex digest (a head character and 15 more) needs: most texts have no such run.
_HEX_RUN = re.compile(r"[0-9A-Fa-f]{16}")
_DATE_HINT = re.compile(r"[-/.]\d\d?[-/.]")  # a date's middle: 11 in 2026-11-26 and 26.11.2026
_TIME_HINT = re.compile(r":(?<=\d:)\d\d")
_DECIMAL_HINT = re.compile(r"\.(?<=\d\.)\d")


def _ipv6_possible(text: str) -> bool:
    """What _ipv6 needs of a run, so of the text: a "::" or six colons."""
    return "::" in text or text.count(":") >= 6


def _lookalike_mask(text: str) -> int:
    """Which of _LOOKALIKES' branches could match in ``text``."""
    if _IN_C:
        return _lookalike_mask_scan(text)
    dots, dashes = text.count("."), text.count("-")
    mask = 0
    if dashes >= 4:
        mask |= 1
    if len(text) >= 16 and _HEX_RUN.search(text) is not None:
        mask |= 2
    if (dots >= 2 or dashes >= 2 or text.count("/") >= 2) and _DATE_HINT.search(text) is not None:
        mask |= 4 | 8
    if ":" in text and _TIME_HINT.search(text) is not None:
        mask |= 16
    if dots and _DECIMAL_HINT.search(text) is not None:
        mask |= 32
    if dots >= 3:
        mask |= 64
    return mask


# -- the same pre-screens as one pass over the characters, for the compiled build ----------------
# Each answers exactly what the regexes above answer (tests/collector/test_redact_compiled.py runs both on the
# corpus and on generated text); in C a character loop costs a fraction of the searches it replaces, in Python several times more.


def _hex(char: str) -> bool:
    return "0" <= char <= "9" or "a" <= char <= "f" or "A" <= char <= "F"


def _upper(char: str) -> bool:
    return "A" <= char <= "Z"


def _letter(char: str) -> bool:
    return "A" <= char <= "Z" or "a" <= char <= "z"


def _groups_of_four(text: str, at: int) -> bool:
    """Whether two groups of four ASCII letters or digits, each after an optional space, start at ``at``."""
    for _ in range(2):
        if _char(text, at) == " ":
            at += 1
        for _ in range(4):
            char = _char(text, at)
            if not (_letter(char) or "0" <= char <= "9"):
                return False
            at += 1
    return True


def _char(text: str, index: int) -> str:
    """The character at ``index``, or NUL past the end (no pattern here matches NUL)."""
    return text[index] if index < len(text) else "\0"


def _decimal(char: str) -> bool:
    """``char.isdecimal()``, with ASCII digits decided inline (in C, isdecimal is a call into the Unicode tables)."""
    return "0" <= char <= "9" or (char > "\x7f" and char.isdecimal())


def _nino_tail(text: str, at: int) -> bool:
    """Whether _NINO_HINT matches at ``at`` (its lookbehind is the caller's): six digits in pairs, each pair after the
    first after an optional space, then an optional space and A-D in any case, then no word character."""
    for pair in range(3):
        if pair and _char(text, at) == " ":
            at += 1
        if not (_decimal(_char(text, at)) and _decimal(_char(text, at + 1))):
            return False
        at += 2
    if _char(text, at) == " ":
        at += 1
    suffix = _char(text, at)
    if not ("A" <= suffix <= "D" or "a" <= suffix <= "d"):
        return False
    after = _char(text, at + 1)
    return not (after.isalnum() or after == "_")


def _fiscal_tail(text: str, at: int) -> bool:
    """Whether _FISCAL_HINT matches at ``at`` (the letter before is the caller's): 2 digits, a month's letter, 2 digits,
    a letter, 3 digits, a letter; ASCII all."""
    for offset in (0, 1, 3, 4, 6, 7, 8):
        char = _char(text, at + offset)
        if not ("0" <= char <= "9"):
            return False
    char = _char(text, at + 2)
    if char not in "ABCDEHLMPRSTabcdehlmprst":
        return False
    return _letter(_char(text, at + 5)) and _letter(_char(text, at + 9))


def _token_mask_scan(text: str, has_digit: bool) -> int:
    """``_token_mask`` in one pass: the counts, "eyJ", _API_KEY_HINT, _MAC_HINT, _NINO_HINT, _FISCAL_HINT and _IBAN_HINT at each character."""
    dots = colons = dashes = 0
    jwt = key = mac = nino = iban = fiscal = False
    for i in range(len(text)):
        char = text[i]
        if not iban and has_digit and _letter(char) and _letter(_char(text, i + 1)) and _char(text, i + 2).isdecimal() and (
            _char(text, i + 3).isdecimal()
        ):
            iban = (i == 0 or not text[i - 1].isalnum() or text[i - 1].isdecimal()) and _groups_of_four(text, i + 4)
        if char == ".":
            dots += 1
            if not mac and _hex(_char(text, i + 1)) and _hex(_char(text, i + 2)) and _hex(_char(text, i + 3)) and _hex(
                _char(text, i + 4)
            ) and _char(text, i + 5) == ".":
                mac = True
        elif char == ":" or char == "-":
            if char == ":":
                colons += 1
            else:
                dashes += 1
                if not key and text.startswith("-----BEGIN", i):
                    key = True
            if not mac and _hex(_char(text, i + 1)) and _hex(_char(text, i + 2)) and _char(text, i + 3) in ":-" and _hex(
                _char(text, i + 4)
            ) and _hex(_char(text, i + 5)) and _char(text, i + 6) in ":-":
                mac = True
        elif _upper(char):
            if not key:
                if char == "A":
                    key = (_upper(_char(text, i + 1)) and _upper(_char(text, i + 2)) and _char(text, i + 3) == "A") or (
                        text.startswith("AIza", i)
                    )
                elif char == "S":
                    key = _char(text, i + 1) in "GK" and (_char(text, i + 1) == "K" or _char(text, i + 2) == ".")
        elif not key and "g" <= char <= "x":
            if char == "g":
                key = _char(text, i + 1) == "h" or text.startswith("glpat-", i) or text.startswith("github_pat_", i)
            elif char == "k":
                key = _char(text, i + 1) == "_"
            elif char == "x":
                key = text.startswith("xox", i)
            elif char == "s":
                key = text.startswith("sk-", i)
            elif char == "w":
                key = text.startswith("whsec_", i)
            elif char == "n":
                key = text.startswith("npm_", i)
            elif char == "p":
                key = text.startswith("pypi-", i)
            elif char == "h":
                key = text.startswith("hooks", i)
        elif char == "e" and not jwt:
            jwt = text.startswith("eyJ", i)
        elif has_digit and _decimal(char) and (i == 0 or not _decimal(text[i - 1])):
            # last: a digit reaches here through comparisons every character makes anyway
            if not nino:
                nino = _nino_tail(text, i)
            if not fiscal and i > 0 and _letter(text[i - 1]):
                fiscal = _fiscal_tail(text, i)
    mask = _JWT_BIT if jwt else 0
    if key:
        mask |= _API_KEY_BIT
    if mac and (dots >= 2 or colons >= 5 or dashes >= 5):
        mask |= _MAC_BIT
    if has_digit:
        if dots >= 3:
            mask |= _IPV4_BIT
        if nino:
            mask |= _NINO_BIT
        if fiscal:
            mask |= _FISCAL_BIT
        if iban:
            mask |= _IBAN_BIT
    return mask


def _lookalike_mask_scan(text: str) -> int:
    """``_lookalike_mask`` in one pass: the counts, a 16-character hex run, _DATE_HINT, _TIME_HINT, _DECIMAL_HINT."""
    dots = dashes = slashes = colons = hex_run = 0
    hexes = date = time = decimal = False
    previous = "\0"
    for i in range(len(text)):
        char = text[i]
        if _hex(char):
            hex_run += 1
            if hex_run >= 16:
                hexes = True
        else:
            hex_run = 0
        if char == "." or char == "-" or char == "/":
            if char == ".":
                dots += 1
                if not decimal and previous.isdecimal() and _char(text, i + 1).isdecimal():
                    decimal = True
            elif char == "-":
                dashes += 1
            else:
                slashes += 1
            if not date and _char(text, i + 1).isdecimal():
                after = _char(text, i + 2)
                date = after in "-/." or after.isdecimal() and _char(text, i + 3) in "-/."
        elif char == ":":
            colons += 1
            if not time and previous.isdecimal() and _char(text, i + 1).isdecimal() and _char(text, i + 2).isdecimal():
                time = True
        previous = char
    mask = 1 if dashes >= 4 else 0
    if hexes:
        mask |= 2
    if (dots >= 2 or dashes >= 2 or slashes >= 2) and date:
        mask |= 4 | 8
    if colons and time:
        mask |= 16
    if dots and decimal:
        mask |= 32
    if dots >= 3:
        mask |= 64
    return mask


def _long_run_scan(text: str) -> bool:
    """``_LONG_RUN.search(text) is not None``: a run of digits and separators from a "(", "+" or digit to a digit five
    or more characters on, else (rarely) the regex, where a digit is followed by ")" or what opens an extension."""
    start = -1  # where a match could open in the current run of run characters
    maybe_short = False
    for i in range(len(text)):
        char = text[i]
        if char.isdecimal():
            if start == -1:
                start = i
            elif i - start >= 5:
                return True
            after = _char(text, i + 1)
            if after == " ":
                after = _char(text, i + 2)
            if after == ")" or after == "x" or after == "X" or after == "e" or after == "E" or after == "#":
                maybe_short = True
        elif char == "(" or char == "+":
            if start == -1:
                start = i
        elif not (char == "." or char == "/" or char == " " or char == "\u00a0" or char == "-" or char == ")"):
            start = -1
    return maybe_short and _LONG_RUN.search(text) is not None


# What may close a _DIGIT_RUN after its last digit, when it is not ")": a phone's extension.
_RUN_TAIL = re.compile(r"[ ]?(?:x|ext\.?|extension|#)[ ]?\d{1,6}(?!\d)", re.IGNORECASE)


def _digit_runs_scan(text: str) -> list[tuple[int, int]]:
    """The spans of ``_DIGIT_RUN.finditer(text)`` six characters long or more, in one pass: from the first "(", "+" or
    digit of a run of digits and separators to its last digit, then a ")" or an extension."""
    spans = []
    n = len(text)
    i = 0
    while i < n:
        char = text[i]
        if not (char.isdecimal() or char == "(" or char == "+"):
            i += 1
            continue
        last = -1  # the run's last digit after i: where the greedy regex gives back to
        j = i + 1
        while j < n:
            char = text[j]
            if char.isdecimal():
                last = j
            elif not (char == "(" or char == ")" or char == "." or char == "/" or char == " " or char == "\u00a0"
                      or char == "+" or char == "-"):  # fmt: skip
                break
            j += 1
        if last == -1:
            i = j  # no digit after i in this run, so none after any later start in it either
            continue
        end = last + 1
        after = _char(text, end)
        if after == ")":
            end += 1
        else:
            if after == " ":
                after = _char(text, end + 1)
            if after == "x" or after == "X" or after == "e" or after == "E" or after == "#":  # nothing else folds to x or e
                tail = _RUN_TAIL.match(text, end)
                if tail is not None:
                    end = tail.end()
        if end - i >= 6:
            spans.append((i, end))
        i = end
    return spans


def _ascii_word(char: str) -> bool:
    return "0" <= char <= "9" or _letter(char) or char == "_"


def _decimal_phones_scan(text: str) -> list[tuple[int, int]]:
    """The spans of ``_DECIMAL_PHONE.finditer(text)`` in one pass: 1-4 ASCII digits after no ASCII word character, ".",
    "+" or "-", then "." and 4-9 digits before no ASCII word character or "."."""
    spans = []
    n = len(text)
    i = 0
    while i < n:
        if not ("0" <= text[i] <= "9"):
            i += 1
            continue
        j = i + 1
        while j < n and "0" <= text[j] <= "9":
            j += 1
        before = text[i - 1] if i else " "
        if j - i <= 4 and _char(text, j) == "." and not (_ascii_word(before) or before == "." or before == "+" or before == "-"):
            m = j + 1
            while m < n and "0" <= text[m] <= "9":
                m += 1
            after = _char(text, m)
            if 4 <= m - j - 1 <= 9 and not (_ascii_word(after) or after == "."):
                spans.append((i, m))
                i = m
                continue
        i = j  # no match opens inside this run of digits: each later digit has a digit before it
    return spans


def _secret_colon_scan(text: str) -> bool:
    """``_SECRET_COLON_HINT.search(text) is not None``: before some ":" and the whitespace before it, the two characters
    a secret's name ends with, in any case ("\u017f" is an "s" to IGNORECASE)."""
    for i in range(len(text)):
        if text[i] == ":":
            j = i - 1
            while j > 0 and text[j].isspace():
                j -= 1
            if j >= 1:
                a, b = text[j - 1], text[j]
                if b == "d" or b == "D":
                    if a == "r" or a == "R" or a == "w" or a == "W":
                        return True
                elif b == "e" or b == "E":
                    if a == "s" or a == "S" or a == "\u017f":
                        return True
                elif b == "y" or b == "Y" or b == "t" or b == "T" or b == "n" or b == "N":
                    if a == "e" or a == "E":
                        return True
    return False


_PARAMS_HINT, _AUTH_HINT, _SCHEME_HINT, _DIGEST_HINT = 1, 2, 4, 8


def _secret_hints(text: str) -> int:
    """What a text may hold secrets in: a parameter, a JSON key or an auth scheme (1), an Authorization header (2),
    Negotiate or NTLM (4), Digest (8)."""
    if _IN_C:
        return _secret_hints_scan(text)
    hints = 0
    if "egotiate" in text or "TLM " in text or "tlm " in text:
        hints = _PARAMS_HINT | _SCHEME_HINT
    elif "=" in text or "%3" in text or '":' in text or "':" in text or "earer" in text or "asic " in text or "oken " in text or (
        "ASIC " in text
    ):
        hints = _PARAMS_HINT
    if ":" in text and ("uthorization" in text or "UTHORIZATION" in text):
        hints |= _AUTH_HINT
    if "igest" in text or "IGEST" in text:
        hints |= _DIGEST_HINT
    return hints


def _has(text: str, at: int, word: str) -> bool:
    """``text.startswith(word, at)``, character by character: most calls end at the first."""
    for k in range(len(word)):
        if _char(text, at + k) != word[k]:
            return False
    return True


def _scheme_at(text: str, at: int, char: str) -> bool:
    """Whether "egotiate", "TLM " or "tlm " starts at ``at`` (``char`` is ``text[at]``)."""
    after = _char(text, at + 1)
    if char == "e":
        return after == "g" and _has(text, at, "egotiate")
    if char == "T":
        return after == "L" and _has(text, at, "TLM ")
    return char == "t" and after == "l" and _has(text, at, "tlm ")


def _secret_hints_scan(text: str) -> int:
    """``_secret_hints`` in one pass: each of its substrings looked for only where its first two characters are, as
    most letters open none."""
    params = colon = auth = scheme = digest = False
    for i in range(len(text)):
        char = text[i]
        if char == ":":
            colon = True
        elif char == "u" or char == "U":
            if not auth:
                after = _char(text, i + 1)
                auth = after == "t" and _has(text, i, "uthorization") or after == "T" and _has(text, i, "UTHORIZATION")
        elif char == "i" or char == "I":
            if not digest:
                after = _char(text, i + 1)
                digest = after == "g" and _has(text, i, "igest") or after == "G" and _has(text, i, "IGEST")
        elif char > "t" or char < '"':  # what opens the others lies in '"'..'t'
            continue
        elif not scheme and (char == "e" or char == "T" or char == "t") and _scheme_at(text, i, char):
            scheme = params = True
        elif params:
            continue
        elif char == "=":
            params = True
        elif char == "%":
            params = _char(text, i + 1) == "3"
        elif char == '"' or char == "'":
            params = _char(text, i + 1) == ":"
        elif char == "e":
            params = _char(text, i + 1) == "a" and _has(text, i, "earer")
        elif char == "a":
            params = _char(text, i + 1) == "s" and _has(text, i, "asic ")
        elif char == "o":
            params = _char(text, i + 1) == "k" and _has(text, i, "oken ")
        elif char == "A":
            params = _char(text, i + 1) == "S" and _has(text, i, "ASIC ")
    hints = _PARAMS_HINT if params else 0
    if scheme:
        hints |= _SCHEME_HINT
    if colon and auth:
        hints |= _AUTH_HINT
    if digest:
        hints |= _DIGEST_HINT
    return hints


def _word(char: str) -> bool:
    """What the regex engine's \\w is: a letter or digit of any script, or "_"."""
    return char.isalnum() or char == "_"


def _id_run_end(text: str, at: int) -> bool:
    """Whether _ID_RUN's closing lookahead holds at ``at``: no word character ("-" is none), or one ASCII letter before none."""
    char = _char(text, at)
    if _letter(char):
        return not _word(_char(text, at + 1))
    return not _word(char)


def _id_runs_scan(text: str) -> list[tuple[int, int, bool]]:
    """``_id_runs(text)`` in one pass: from a digit after no word character or "+" (or after one ASCII letter after
    none), a lettered HETU, else the longest run of digits and " ./+-" that ends in a digit where _id_run_end holds,
    when it is 7 characters or more."""
    spans = []
    n = len(text)
    i = 0
    while i < n:
        char = text[i]
        if not ("0" <= char <= "9"):
            i += 1
            continue
        before = text[i - 1] if i else " "
        if _word(before) or before == "+":
            if not (_letter(before) and (i < 2 or not _word(text[i - 2]))):
                i += 1
                continue
        # A HETU with a letter for its century sign: 5 digits, the sign, 3 digits, the check, no word character.
        j = i + 1
        while j < i + 6 and "0" <= _char(text, j) <= "9":
            j += 1
        sign = _char(text, i + 6)
        check = _char(text, i + 10)
        if j == i + 6 and ("A" <= sign <= "F" or "U" <= sign <= "Y" or "a" <= sign <= "f" or "u" <= sign <= "y") and (
            "0" <= _char(text, i + 7) <= "9" and "0" <= _char(text, i + 8) <= "9" and "0" <= _char(text, i + 9) <= "9"
        ) and ("0" <= check <= "9" or "A" <= check <= "Y" or "a" <= check <= "y") and not _word(_char(text, i + 11)):
            spans.append((i, i + 11, True))
            i += 11
            continue
        j = i + 1
        while j < n and ("0" <= text[j] <= "9" or text[j] == " " or text[j] == "." or text[j] == "/" or text[j] == "+"
                         or text[j] == "-"):  # fmt: skip
            j += 1
        end = -1
        k = j
        while k > i + 1:  # the greedy run gives back to its last digit where the lookahead holds (two digits at least)
            if "0" <= text[k - 1] <= "9" and _id_run_end(text, k):
                end = k
                break
            k -= 1
        if end == -1:
            i += 1
            continue
        if end - i >= 7:
            spans.append((i, end, False))
        i = end
    return spans


def _any_digit(text: str) -> bool:
    """``any(char.isdigit() for char in text)``, without a generator (which costs the compiled build most)."""
    for char in text:
        if char.isdigit():
            return True
    return False


def _any_decimal(text: str) -> bool:
    """``_ANY_DIGIT.search(text) is not None``: a Unicode decimal digit, what the regex engine's \\d is."""
    for char in text:
        if char.isdecimal():
            return True
    return False


def _key_tail_scan(text: str, low: int, high: int) -> tuple[int, int]:
    """``_KEY_TAIL.search(text, low, high).span()``, or an empty span: the word characters and "-" that end at ``high``
    (or at a newline just before it, where ``$`` matches too), back to ``low`` at most."""
    end = high
    if end > low and text[end - 1] == "\n":
        end -= 1
    start = end
    while start > low and (text[start - 1].isalnum() or text[start - 1] == "_" or text[start - 1] == "-"):
        start -= 1
    return (start, end) if start < end else (high, high)


# Digits with the separators numbers are written with, and a phone's extension.
_DIGIT_RUN = re.compile(
    r"[(+\d][\d()./ \u00a0+-]*\d(?:\)|(?:[ ]?(?:x|ext\.?|extension|#)[ ]?\d{1,6})(?!\d))?", re.IGNORECASE
)
# What a _DIGIT_RUN of six characters or more holds: a long core, or a core with ")" or an extension.
_LONG_RUN = re.compile(r"[(+\d][\d()./ \u00a0+-]{4,}\d|[(+\d][\d()./ \u00a0+-]*\d(?:\)|[ ]?(?:x|ext\.?|extension|#)[ ]?\d)", re.IGNORECASE)
_GROUP = re.compile(r"\+?\(?\+?(\d+)\)?")  # group 1: its digits
_NOT_DIGIT = re.compile(r"\D+")
_EXTENSION = re.compile(r"[ ]?(?:x|ext\.?|extension|#)[ ]?\d{1,6}$", re.IGNORECASE)
_SSN = re.compile(r"^(\d{3})([- ])(\d{2})\2(\d{4})$")
_CARD_GROUPINGS = frozenset({(4, 4, 4, 4), (4, 4, 4, 4, 3), (4, 4, 4, 4, 2), (4, 4, 4, 4, 1), (4, 4, 4, 3), (4, 4, 4, 2),
                             (4, 4, 4, 1), (4, 4, 4), (4, 6, 5), (4, 6, 4), (4, 4, 5), (4, 4, 4, 4, 4)})  # fmt: skip
_MAX_PHONE_TRIES = 12
# A unit right after a number ("took 1234567890 ns", "7912345678 °C", "5 %"): the number is a measurement. Case counts
# (Ms. Jones, MS are no units), and so does what follows ("s'il", "min." is a unit, "mine" is not).
_UNIT_AFTER = re.compile(
    r"[ \u00a0]?(?:[npuµμm]?s|sec|min|h|hrs?|[kMG]?Hz|rpm|[mk]?V|m?A|mAh|[mkMG]?Wh?|°[CF]?|℃|K|%|[kKMGT]i?B|B|bytes"
    r"|[kMG]?bps|[mk]?g|[mck]?m|[mµ]?L|ml|[khM]?Pa|bar|psi|dBm?|ppm|lx|lux|lm|Nm|N·m|[mkM]?Ω|ohms?|fps|px|ops|rps"
    r"|EUR|USD|GBP|CHF|JPY|CNY|INR|BRL|[€$£¥₹])(?![\w'’])"
)
_MEMO_TEXTS, _MEMO_CHARS = 4096, 256  # at most 4096 x 256 characters remembered per redactor


@cache
def _phonenumbers() -> ModuleType:
    """libphonenumber, imported on the first phone candidate: the agent starts without paying for it."""
    import phonenumbers

    return phonenumbers


def _international(digits: str) -> bool:
    """Whether +<digits> is a valid number, without the cost of ``phonenumbers.parse``."""
    phonenumbers = _phonenumbers()
    for width in (1, 2, 3):
        code = int(digits[:width])
        if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            national = digits[width:]
            if not national or national[0] == "0" or len(national) > 17:
                break  # a leading zero (Italy) needs parse's handling
            return _valid_number(code, national)
    return False


# libphonenumber's number types, in the order its type check tries them.
_NUMBER_TYPES = ("premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan", "voicemail",
                 "fixed_line", "mobile")  # fmt: skip
_KNOWN_TYPE: dict[tuple[str, int, int], re.Pattern[str] | None] = {}  # bounded: ~250 metadata x 17 lengths
_LEADING: dict[str, re.Pattern[str]] = {}


def _valid_number(country_code: int, national: str) -> bool:
    """``phonenumbers.is_valid_number`` of +<country_code> <national>: the same metadata and the same decision, with a
    region's patterns for one length in one compiled regex instead of a dozen matched one by one."""
    phonenumbers = _phonenumbers()
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(country_code)
    if not regions or not national:
        return False
    region = regions[0]
    if len(regions) > 1:  # +1, +7, +44...: the first region whose leading digits or patterns fit
        region = None
        for candidate in regions:
            metadata = phonenumbers.PhoneMetadata.metadata_for_region(candidate, None)
            if metadata is None:
                continue
            if metadata.leading_digits is not None:
                leading = _LEADING.get(metadata.leading_digits)
                if leading is None:
                    leading = _LEADING[metadata.leading_digits] = re.compile(metadata.leading_digits)
                if leading.match(national):
                    region = candidate
                    break
            elif _known_type(metadata, national):
                region = candidate
                break
        if region is None:
            return False
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
    if metadata is None or (region != phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY and metadata.country_code != country_code):
        return False
    return _known_type(metadata, national)


def _known_type(metadata, national: str) -> bool:
    """Whether libphonenumber gives the national number a type (not UNKNOWN) under ``metadata``."""
    key = (metadata.id, metadata.country_code, len(national))
    pattern = _KNOWN_TYPE.get(key, False)
    if pattern is False:
        pattern = _KNOWN_TYPE[key] = _known_type_regex(metadata, len(national))
    return pattern is not None and pattern.fullmatch(national) is not None


def _known_type_regex(metadata, length: int) -> re.Pattern[str] | None:
    """The general pattern as a lookahead, then one branch per type whose possible lengths hold ``length``."""

    def fits(desc) -> bool:
        return desc is not None and bool(desc.national_number_pattern) and (
            not desc.possible_length or length in desc.possible_length
        )

    if not fits(metadata.general_desc):
        return None
    # Where mobile and fixed-line share a pattern libphonenumber tries it once, as fixed-line.
    names = _NUMBER_TYPES[:-1] if metadata.same_mobile_and_fixed_line_pattern else _NUMBER_TYPES
    branches = [getattr(metadata, name).national_number_pattern for name in names if fits(getattr(metadata, name))]
    if not branches:
        return None
    return re.compile(rf"(?=(?:{metadata.general_desc.national_number_pattern})\Z)(?:{'|'.join(branches)})")


class Redactor:
    """Finds PII and secrets in text and replaces each with its placeholder."""

    def __init__(
        self,
        *,
        regions: Sequence[str] = (),
        patterns: Sequence[CustomPattern] = (),
        allow: Sequence[re.Pattern[str]] = (),
        detector: Detector | None = None,
    ) -> None:
        phonenumbers = _phonenumbers() if regions else None
        for region in regions:
            if phonenumbers.PhoneMetadata.metadata_for_region(region.upper()) is None:
                raise ValueError(f"unknown phone region {region!r} (use ISO 3166 codes: DE, FR, US...)")
        self.regions = tuple(region.upper() for region in regions)
        self._codes = {
            region: str(phonenumbers.PhoneMetadata.metadata_for_region(region).country_code) for region in self.regions
        }
        self.patterns = tuple(patterns)
        self.allow = tuple(allow)
        self.detector = detector
        self._phones: dict[tuple[str, bool], int] = {}
        self._texts: dict[str, str] = {}

    def redact(self, text: str) -> str:
        """``text`` with every finding replaced by its placeholder; a short text seen lately is not searched again."""
        known = self._texts.get(text)
        if known is not None:
            return known
        redacted = self._redact(text)
        # Fleets log the same short notes over and over; a model detector may not be pure, so not with one.
        if self.detector is None and len(text) <= _MEMO_CHARS:
            if len(self._texts) >= _MEMO_TEXTS:
                self._texts.clear()
            self._texts[text] = redacted
        return redacted

    def redact_many(self, values: Iterable[str | None]) -> list[str | None]:
        """``[redact(value) for value in values]`` with None kept, for a column: a value that repeats in the column is
        searched once, and one with nothing found is returned as the same object."""
        if self.detector is not None:  # a model detector may not be pure: every value goes to it
            return [None if value is None else self._redact(value) for value in values]
        column = list(values)
        texts = self._texts
        answers: dict[str, str | None] = {}
        for value in column:
            if value is not None and value not in answers:
                answers[value] = texts.get(value)
        pending = [value for value, known in answers.items() if known is None]
        find = self.find
        for value in pending:
            answers[value] = redacted = _replace(value, find(value))
            if len(value) <= _MEMO_CHARS:
                if len(texts) >= _MEMO_TEXTS:
                    texts.clear()
                texts[value] = redacted
        return [None if value is None else answers[value] for value in column]

    def _redact(self, text: str) -> str:
        return _replace(text, self.find(text))

    __call__ = redact

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """Non-overlapping (start, end, placeholder) findings, in text order."""
        found: list[tuple[int, int, str]] = []
        add = found.append
        has_digit = _any_decimal(text) if _IN_C else _ANY_DIGIT.search(text) is not None
        hints = _secret_hints_scan(text) if _IN_C else _secret_hints(text)
        if hints & _PARAMS_HINT:
            self._secret_params(text, add)
            if "alue" in text or "ALUE" in text:
                _form_fields(text, add)
            if _SECRET_JSON_HINT.search(text) is not None:
                for match in _SECRET_JSON.finditer(text):
                    group = 2 if match.group(2) is not None else 3
                    add((match.start(group), match.end(group), "<SECRET>"))
            for match in _BEARER.finditer(text):
                add((match.start(1), match.end(1), "<SECRET>"))
            if hints & _SCHEME_HINT:
                for match in _NEGOTIATE.finditer(text):
                    add((match.start(1), match.end(1), "<SECRET>"))
            if "asic " in text or "ASIC " in text:
                for match in _BASIC.finditer(text):
                    if _basic_credentials(match.group(1)):
                        add((match.start(1), match.end(1), "<SECRET>"))
            if hints & _DIGEST_HINT:
                self._digest(text, add)
        if hints & _AUTH_HINT:
            for match in _AUTH_HEADER.finditer(text):
                add((match.start(1), match.end(1), "<SECRET>"))
        if ":" in text and (_secret_colon_scan(text) if _IN_C else _SECRET_COLON_HINT.search(text) is not None):
            for match in _SECRET_COLON.finditer(text):
                end = match.end(1)
                if ("<" in text or ">" in text) and not _markup_before(text, match.start()):
                    end = _SECRET_COLON_TEXT.match(text, match.start(1)).end()  # "password: ab<cd>ef": one password
                add((match.start(1), end, "<SECRET>"))
        if "</" in text:
            for match in _SECRET_ELEMENT.finditer(text):
                add((match.start(2), match.end(2), "<SECRET>"))
        if "://" in text:
            for match in _URL_CREDENTIALS.finditer(text):
                add((match.start(), match.end(), "<SECRET>"))
        # Whatever digits the text holds: an API key (AKIA + 16 letters) or a MAC (ab:cd:ef:...) may have none.
        mask = _token_mask(text, has_digit)
        if mask:
            self._tokens(text, mask, add)
        if "@" in text or "%40" in text or "2540" in text:  # "2540": %2540, %252540 (an escape encoded again)
            self._emails(text, add)
        if _ipv6_possible(text):
            self._ipv6(text, add)
        # Custom patterns and the detector first, so the digit runs inside any finding are not looked at.
        extra: list[tuple[int, int, str]] = []
        for pattern in self.patterns:
            for match in pattern.regex.finditer(text):
                if match.end() > match.start() and _valid(pattern.validator, match.group()):
                    extra.append((match.start(), match.end(), pattern.placeholder))
        if self.detector is not None:
            for start, end, label in self.detector(text):
                if not (0 <= start < end <= len(text)):
                    raise ValueError(f"the detector returned span {start}..{end} outside a text of {len(text)}")
                extra.append((start, end, f"<{str(label).upper()}>"))
        if has_digit:
            # A run of six digits and separators or more: what every kind of number below needs.
            long_run = _long_run_scan(text) if _IN_C else _LONG_RUN.search(text) is not None
            if long_run:
                self._national_ids(text, add)
            if long_run:
                self._numbers(text, _settle(found + extra) if found or extra else found, add)
        found += extra
        if not found:
            return found
        if has_digit and _phone_or_ipv4(found):
            found = [finding for finding in found if not _measurement(text, finding)]
        if self.allow:
            kept = [match.span() for pattern in self.allow for match in pattern.finditer(text)]
            found = [span for span in found if not any(a < span[1] and span[0] < b for a, b in kept)]
        return _settle(found)

    # -- kinds ------------------------------------------------------------------------------------

    def _tokens(self, text: str, mask: int, add: Callable[[tuple[int, int, str]], None]) -> None:
        """JWTs, API keys, MACs, IPv4s, IBANs, NINOs and codici fiscali: one regex, then each kind's check."""
        pattern = _TOKENS(mask)
        match = pattern.search(text)
        while match is not None:
            kind = match.lastgroup
            start, end = match.span()
            found = None
            if kind == "iban":
                length = _iban_length(match.group())
                if length is not None:
                    found = (start, start + length, "<IBAN>")
                else:
                    # A candidate that fails may have run on into the next IBAN: look again inside it.
                    inner = _IBAN.search(text, start + 1, end)
                    while inner is not None:
                        length = _iban_length(inner.group())
                        if length is not None:
                            add((inner.start(), inner.start() + length, "<IBAN>"))
                        inner = _IBAN.search(text, inner.start() + (length or 1), end)
            elif kind == "api_key":
                if not start or not _glued(text[start - 1]) and text[start - 1] != "-":
                    found = (start, end, "<API_KEY>")
            elif kind == "ipv4":
                octets = [int(octet) for octet in match.group().split(".")]
                # 0.x.x.x (this network, 0.0.0.0) and 255.x.x.x (netmasks, broadcast) are no host's address.
                if all(octet <= 255 for octet in octets) and 0 < octets[0] < 255:
                    found = (start, end, "<IPV4>")
            elif kind == "nino":
                if nino_ok(match.group()[:2]):
                    found = (start, end, "<NINO>")
            elif kind == "fiscal":
                if fiscal_code_ok(text[start - 6 : end]):  # the match opens at its digits, after six letters
                    found = (start - 6, end, "<CODICE_FISCALE>")
            else:
                found = (start, end, f"<{kind.upper()}>")  # type: ignore[union-attr]
            if found is not None:
                add(found)
            # A candidate that fails its check may have swallowed the start of the next one ("AA0000... 1.2.3.4"
            # is an IBAN candidate up to the "1"): go on from just after its start, not from its end.
            match = pattern.search(text, found[1] if found is not None else start + 1)

    def _national_ids(self, text: str, add: Callable[[tuple[int, int, str]], None]) -> None:
        """National identity numbers in the forms of _NATIONAL_IDS: a run of digits, its form, its check."""
        runs = _id_runs_scan(text) if _IN_C else _id_runs(text)
        for start, end, hetu in runs:
            lead = start > 0 and text[start - 1].isalpha()  # an ASCII letter: the regex let no other one before
            if hetu:
                if not lead and hetu_ok(text[start:end]):
                    add((start, end, "<HETU>"))
                continue
            if end - start > _LONGEST_FORM and " " not in text[start:end]:
                continue  # longer than any form, and no pieces to try
            tail = 0  # how far a closing letter reaches past the run: "Z" or "-Z"
            if end < len(text) and text[end].isalpha():
                tail = 1
            elif end + 1 < len(text) and text[end] == "-" and text[end + 1].isalpha() and (
                end + 2 == len(text) or not (text[end + 2].isalnum() or text[end + 2] == "_")
            ):
                tail = 2
            found = self._national_id(text, start - lead, end + tail, _id_shape(text, start, end, lead, tail))
            if found is None and " " in text[start:end]:
                # A strong form is what it is beside any group a space sets apart: try each piece of the run.
                pieces = [piece.span() for piece in _NOT_SPACE.finditer(text, start, end)]
                for index, (a, b) in enumerate(pieces):
                    first, last = index == 0 and lead, tail if index == len(pieces) - 1 else 0
                    shape = _id_shape(text, a, b, first, last)
                    if shape in _STRONG_FORMS:
                        found = self._national_id(text, a - first, b + last, shape)
                        if found is not None:
                            add(found)
                continue
            if found is not None:
                add(found)

    def _national_id(self, text: str, start: int, end: int, shape: str) -> tuple[int, int, str] | None:
        """The finding for text[start:end] of the form ``shape``: the first of its kinds whose check passes where it is
        found (its country declared or its name before it, and for a bare number none of a phone's measurement rules)."""
        kinds = _NATIONAL_IDS.get(shape)
        if kinds is None:
            return None
        value = text[start:end].translate(_ID_SEPARATORS)
        name: str | None = None  # the word of _ID_NAMES before the run, or "" for none: looked for once, when needed
        for kind in kinds:
            named = False
            if kind.region is not None:
                if name is None:
                    name = _name_before(text, start)
                named = name in kind.words
                if not named and kind.region not in self.regions:
                    continue
            if not kind.check(text[start:end] if kind.raw else value):
                continue
            if kind.region is not None and not named and (
                text[start - 1 : start] == "#" or _measured(text, end) or _after_key(text, start)
                or _serial_before(text, start) or _id_label(text, start)
                or _VERSION_BEFORE.search(text, max(0, start - 24), start) is not None
                or (len(value) == 10 or len(value) == 13) and value[0] == "1" and end - start == len(value)
            ):  # fmt: skip
                continue  # as for phones: after "#", a key, a label (serial, id, version), before a unit, or an epoch time
            return (start, end, kind.placeholder)
        return None

    def _secret_params(self, text: str, add: Callable[[tuple[int, int, str]], None]) -> None:
        for equals in _EQUALS.finditer(text):
            at = equals.start()
            if _IN_C:
                start, end = _key_tail_scan(text, max(0, at - 40), at)
                if start == end:
                    continue
            else:
                key = _KEY_TAIL.search(text, max(0, at - 40), at)
                if key is None:
                    continue
                start, end = key.span()
            name = text[start:end].lower()
            before = text[start - 1] if start else " "
            if name in _SECRET_KEYS or (name in _QUERY_KEYS and before in "?&;"):
                quoted = _QUOTED_VALUE.match(text, equals.end())
                if quoted is not None:
                    group = 1 if quoted.group(1) is not None else 2
                    add((quoted.start(group), quoted.end(group), "<SECRET>"))
                    continue
                value = (_SECRET_VALUE if _markup_before(text, start) else _SECRET_VALUE_TEXT).match(text, equals.end())
                if value is not None:
                    add((value.start(), value.end(), "<SECRET>"))

    def _digest(self, text: str, add: Callable[[tuple[int, int, str]], None]) -> None:
        """A Digest header's nonce, cnonce and response, on the line its scheme opens."""
        for scheme in _DIGEST.finditer(text):
            line_end = text.find("\n", scheme.end())
            for param in _DIGEST_PARAM.finditer(text, scheme.end(), len(text) if line_end == -1 else line_end):
                group = 1 if param.group(1) is not None else 2
                add((param.start(group), param.end(group), "<SECRET>"))

    def _emails(self, text: str, add: Callable[[tuple[int, int, str]], None]) -> None:
        for at in _AT.finditer(text):
            start = at.start()
            if at.end() - start != 1:
                self._encoded_email(text, start, at.end(), add)
                continue
            local = _local_char
            quoted = False
            while True:
                while start > 0 and local(text[start - 1]):
                    start -= 1
                # '"john smith"@x.com', '"first".last@x.com': a quoted word ends here (not a JSON string before a word).
                if start == 0 or text[start - 1] != '"' or (start < at.start() and text[start] != "."):
                    break
                opening = _quoted_word(text, start)
                if opening == -1:
                    break
                start, quoted = opening, True
                if start == 0 or text[start - 1] != ".":
                    break
            while start < at.start() and text[start] == ".":
                start += 1
            if start == at.start():
                continue
            # "user=jane@x.com": the key of a key=value is not part of the address, though "=" may be.
            key = -1 if quoted else text.rfind("=", start, at.start())
            if key != -1 and key + 1 < at.start():
                start = key + 1
            elif key != -1 and key > start and (text[key - 1].isalnum() or text[key - 1] in "_-") and _is_key(text, start, key):
                continue  # "password=@0.A": a key's value with no local part is no address ("=@a.io", "0=@a.io" are ones)
            domain = _EMAIL_DOMAIN.match(text, at.end()) or _ADDRESS_LITERAL.match(text, at.end())
            if domain is not None:
                add((start, domain.end(), "<EMAIL>"))

    def _encoded_email(self, text: str, at: int, after: int, add: Callable[[tuple[int, int, str]], None]) -> None:
        """The URL-encoded address around the "%40" at ``at``: its escapes decoded to see where it starts and ends."""
        start = _encoded_local_start(text, at)
        if start == at and text[at - 3 : at] == "%22":  # %22john%20smith%22%40x.com: an encoded quoted local part
            start = _encoded_quoted_start(text, at)
        while start < at and text[start] == ".":
            start += 1
        if start == at:
            return
        domain = _ENCODED_DOMAIN.match(text, after)
        if domain is not None:
            add((start, domain.end(), "<EMAIL>"))

    def _ipv6(self, text: str, add: Callable[[tuple[int, int, str]], None]) -> None:
        for match in _IPV6_RUN.finditer(text):
            run = match.group()
            # An address has "::" or seven colons (six before a dotted IPv4 tail); a time has two.
            if "::" not in run and run.count(":") < 6:
                continue
            offset = match.start()
            # "addr:2001:db8::1": the address may follow a label and a colon; try each start.
            starts = [0] + [i + 1 for i, char in enumerate(run) if char == ":" and i + 1 < len(run) and run[i + 1] != ":" and (i == 0 or run[i - 1] != ":")]
            for start in starts[:4]:
                candidate = run[start:].rstrip(".")
                while candidate and not _ipv6_ok(candidate) and candidate[-1] in ":.":
                    candidate = candidate[:-1]
                if _ipv6_ok(candidate):
                    add((offset + start, offset + start + len(candidate), "<IPV6>"))
                    break

    def _numbers(self, text: str, found: list[tuple[int, int, str]], add: Callable[[tuple[int, int, str]], None]) -> None:
        """Cards, SSNs and phones: digit runs outside look-alikes, checked group by group (in a text with a long run)."""
        mask = _lookalike_mask(text)
        if mask & 32 and self.regions:
            self._named_decimals(text, add)
        work = _LOOKALIKES(mask).sub(_blank, text) if mask else text
        runs = _digit_runs_scan(work) if _IN_C else [run.span() for run in _DIGIT_RUN.finditer(work) if run.end() - run.start() >= 6]
        for start, end in runs:
            # Glued to a word (a716-4466..., SKU-4471-...) a group is part of an identifier, not a number
            # of a person: drop the glued group, keep what a space separates from it.
            before = work[start - 1] if start else " "
            if _glued(before) or (before in "-/_#" and start > 1 and _glued(work[start - 2])):
                space = work.find(" ", start, end)
                if space == -1:
                    continue
                start = space + 1
            after = work[end] if end < len(work) else " "
            if _glued(after):
                space = work.rfind(" ", start, end)
                if space == -1:
                    continue
                end = space
            # Inside an IBAN, IP or key found already, whatever the run holds loses to it (see _settle).
            if start < end and not (found and any(a <= start and end <= b for a, b, _ in found)):
                # "order #123-456-7890" is an order's number; "took 1234567890 ns" a measurement, whatever its digits;
                # "S/N 7126-8348-58" a serial number.
                numbered = start > 0 and work[start - 1] == "#"
                # After an id's label ("device_id=", "id: ") as after a serial's, the number is the id.
                serial = not numbered and (_serial_before(text, start) or _id_label(text, start) and not _phone_named(text, start))
                self._run(text, start, end, add, numbered or serial, serial)

    def _named_decimals(self, text: str, add: Callable[[tuple[int, int, str]], None]) -> None:
        """Phones written like decimals (10.969512, as Armenia writes them), where a phone word names them: elsewhere
        such a number is a reading, and it was masked as one."""
        spans = _decimal_phones_scan(text) if _IN_C else [match.span() for match in _DECIMAL_PHONE.finditer(text)]
        for start, end in spans:
            if end - start > 7 and _phone_named(text, start):  # seven digits at least, as every phone of this shape
                piece = text[start:end]
                known = self._phones.get((piece, False))
                if (self._remember_phone(piece, False) if known is None else known) == _PHONE:
                    add((start, end, "<PHONE>"))

    def _run(
        self, text: str, start: int, end: int, add: Callable[[tuple[int, int, str]], None], numbered: bool, serial: bool
    ) -> None:
        """Find cards, SSNs and phones in one digit run: the longest valid piece from the left. After "#" or a serial
        number's label (``numbered``) the run opens with no national phone, and after the label (``serial``) with no
        card of 12 or 13 digits either; before a unit (_measured) it ends in no national phone (a "+" number is a phone,
        Luhn and an issuer of 14 digits or more make a card, whatever is around them)."""
        chunk = text[start:end]
        if chunk.isdigit() and chunk.isascii():  # one bare group, the commonest run: no grouping to weigh
            if 6 <= end - start <= 19:
                # One group holds no SSN; an unseparated 13 digits with a GS1 check digit is an EAN-13 barcode unless a
                # card word names it; after a serial's label 12 or 13 digits are the serial.
                size = end - start
                kind = "<CARD>" if card_ok(chunk) and not (size <= 13 and serial or size == 13 and _barcode(text, chunk)) else None
                # The value of key=value is a counter or an id (Redactor._phone): no phone, so nothing to ask.
                if (
                    kind is None and not numbered and not _measured(text, end) and not _after_key(text, start)
                    and not ((size == 8 or size == 10 or size == 13) and _not_a_phone_here(text, chunk, start))
                ):  # fmt: skip
                    known = self._phones.get((chunk, False))
                    if known is None:
                        known = self._remember_phone(chunk, False)
                    kind = "<PHONE>" if known == _PHONE or known and _phone_here(text, start, known) else None
                if kind is not None:
                    add((start, end, kind))
            return
        extension = _extension(chunk)
        matches = list(_GROUP.finditer(chunk, 0, extension.start() if extension else len(chunk)))
        groups = [match.span() for match in matches]
        count = len(groups)
        sizes = [match.end(1) - match.start(1) for match in matches]
        total = [0]
        for size in sizes:
            total.append(total[-1] + size)
        cuts: set[int] | None = None  # where a part of the run may be cut; the whole run needs none
        after_key = _after_key(text, start)
        tries = 0
        measured: bool | None = None  # whether a unit follows the run: asked once, when a piece ending it is weighed
        hits: list[tuple[int, int, tuple[int, int, str]]] = []
        i = 0
        while i < count:
            hit = None
            for j in range(count, i, -1):
                digits = total[j] - total[i]
                if digits < 6:
                    break  # shorter pieces from here hold fewer digits still
                if digits > 19:
                    continue
                a, b = groups[i][0], groups[j - 1][1]
                kind = None
                if j == count and extension:
                    # What reads as an extension ("#0", "x12") after a card or SSN is not part of it.
                    core = _balanced(chunk[a:b])
                    kind = self._card_or_ssn(text, core, sizes[i:j], serial and i == 0) if digits >= 9 and core else None
                    b = len(chunk) if kind is None else b
                piece = _balanced(chunk[a:b])
                if not piece:
                    continue
                if kind is None and digits >= 9:
                    kind = self._card_or_ssn(text, piece, sizes[i:j], serial and i == 0)
                whole = i == 0 and j == count
                if kind is None and not whole and cuts is None:
                    # A phone is the whole run or a part of it cut at a space: "+49 30 1234567 12" may end in a
                    # reading, but "3512-1008" is not a phone inside "3512-1008-0977-7488" (nor in any card-shaped run).
                    # Nor is a phone cut out of a count with thousands spaces ("44 083 147 632").
                    card_shaped = count >= 3 and sizes[0] == sizes[1] == sizes[2] == 4 or _THOUSANDS_SPACED.fullmatch(chunk) is not None
                    cuts = set() if card_shaped else {0, count}
                    cuts.update(k for k in range(1, count) if not card_shaped and " " in chunk[groups[k - 1][1] : groups[k][0]])
                if kind is None and (whole or i in cuts and j in cuts) and not (  # type: ignore[operator]
                    (numbered and i == 0 or j == count and (measured := _measured(text, end) if measured is None else measured))
                    and not piece.lstrip("( ").startswith("+")
                ):
                    if tries < _MAX_PHONE_TRIES and not (
                        (len(piece) == 8 or len(piece) == 10 or len(piece) == 13)
                        and _not_a_phone_here(text, piece, start + chunk.index(piece, a))
                    ):
                        keyed = after_key and i == 0
                        known = self._phones.get((piece, keyed))
                        if known is None:
                            tries += 1
                            known = self._remember_phone(piece, keyed)
                        if known == _PHONE or known and _phone_here(text, start + chunk.index(piece, a), known):
                            kind = "<PHONE>"
                if kind is not None:
                    at = chunk.index(piece, a)
                    hit = (start + at, start + at + len(piece), kind)
                    break
            if hit is None:
                i += 1
                continue
            hits.append((i, j, hit))
            i = j
        # The whole run or nothing of it: a hit beside a group of its own number that no hit covers ("1234-<CARD>",
        # "1234 <CARD>" in 1234 5678 9012 3456) would leave that piece behind and rewrite a number that is not one.
        # A "+" phone or a card in four groups or more is what it is whatever group a space sets beside it.
        starts, ends = {i for i, _, _ in hits}, {j for _, j, _ in hits}
        for i, j, hit in hits:
            strong = text[hit[0]] == "+" or hit[2] == "<CARD>" and j - i >= 4
            if i > 0 and i not in ends and _one_number(chunk, groups, sizes, i, i + 1 if i + 1 < j else -1, strong):
                continue
            if j < count and j not in starts and _one_number(chunk, groups, sizes, j, j - 2 if j - 2 >= i else -1, strong):
                continue
            add(hit)

    def _remember_phone(self, piece: str, after_key: bool) -> int:
        """``_phone``, kept for the next time the same piece comes (operators' numbers repeat)."""
        known = self._phone(piece, after_key)
        if len(self._phones) >= 4096:
            self._phones.clear()
        self._phones[piece, after_key] = known
        return known

    def _card_or_ssn(self, text: str, piece: str, sizes: list[int], serial: bool) -> str | None:
        count = sum(sizes)
        if (14 if serial else 12) <= count <= 19 and "+" not in piece and "(" not in piece and "x" not in piece.lower():
            if len(sizes) == 1 or tuple(sizes) in _CARD_GROUPINGS:
                digits = _NOT_DIGIT.sub("", piece)
                if len(set(_DIGITS_ONLY.sub("", piece))) <= 1 and card_ok(digits):
                    # An unseparated 13 digits that carries a GS1 check digit is an EAN-13 barcode, unless a card word names it.
                    if not (len(sizes) == 1 and count == 13 and _barcode(text, digits)):
                        return "<CARD>"
        if count == 9 and len(sizes) == 3:
            ssn = _SSN.match(piece)
            if ssn and ssn_ok(ssn.group(1), ssn.group(3), ssn.group(4)):
                return "<SSN>"
        return None

    def _phone(self, piece: str, after_key: bool) -> int:
        """Whether libphonenumber calls the piece a valid number (international, or national in a declared region), and
        how sure that makes it a phone: _PHONE, _NAMED_PHONE (a measurement's shape: a phone only where a phone word
        names it), _UNLESS_BARCODE (an EAN check digit: a phone unless a barcode word is in the text), or 0."""
        core = piece  # the piece without its extension
        if piece.isdigit() and piece.isascii():  # a bare run, the commonest candidate: nothing to strip
            body = piece
        else:
            extension = _extension(piece)
            core = piece[: extension.start()] if extension else piece
            body = _NOT_DIGIT.sub("", core)
        if not body.isascii():
            body = "".join(str(int(char)) for char in body)  # Bengali, Arabic-Indic... digits
        if not 6 <= len(body) <= 17:
            return 0
        lead = piece.lstrip("( ")
        if lead.startswith("+"):
            return _PHONE if _international(body) or self._parse(piece, None) is not None else 0
        if lead.startswith("00") and len(body) > 9:
            return _PHONE if _international(body[2:]) or self._parse("+" + lead[2:], None) is not None else 0
        if len(body) < 7 and " " not in piece:
            return 0
        bare = body == core or core.isdigit()  # "4165457897392 x2": a bare number before a quantity is bare still
        if bare and after_key:
            return 0  # the value of key=value: a counter, an id
        for region in self.regions:
            number = self._parse(piece, region)
            if number is not None:
                break
            # Its own country code without "+" or "00" ("573041833856" in Colombia).
            code = self._codes[region]
            if bare and body.startswith(code) and _international(body):
                break
        else:
            return 0
        # The shapes of measurements: an epoch second or millisecond (2001-2033), a number with thousands separators
        # (581.542.170), and a bare number without the trunk prefix its country writes (581542170 for 0581-54 21 70).
        if bare and (len(body) == 10 or len(body) == 13) and body[0] == "1" or "." in piece and _THOUSANDS.fullmatch(piece) is not None:
            return _NAMED_PHONE
        spaced = not bare and (" " in piece or "\u00a0" in piece) and _THOUSANDS_SPACED.fullmatch(piece) is not None
        # 12.17.696: a version's or a reading's shape (no group of four); with three groups, a version's in every country.
        dotted = not bare and piece.count(".") >= 2 and _DOTTED_SHORT.fullmatch(core) is not None
        if dotted and core.count(".") == 2:
            return _NAMED_PHONE
        if (bare or spaced or dotted) and number is not None and _prefix_left_out(number, region, body):
            return _NAMED_PHONE
        if bare and len(body) in (8, 13) and ean_ok(body):
            # 13 bare digits are written by shops' scanners every day, by people for a phone (a country code without "+")
            # seldom: an EAN-13's are a phone where a phone word names them; 8 are how some countries write every phone.
            return _NAMED_PHONE if len(body) == 13 else _UNLESS_BARCODE
        return _PHONE

    def _parse(self, piece: str, region: str | None):  # -> phonenumbers.PhoneNumber | None (imported lazily)
        """The number libphonenumber reads in the piece when it calls it valid, else None."""
        phonenumbers = _phonenumbers()
        try:
            number = phonenumbers.parse(piece, region)
        except phonenumbers.NumberParseException:
            return None
        if _valid_number(number.country_code, phonenumbers.national_significant_number(number)):
            return number
        return None


_ANY_DIGIT = re.compile(r"\d")
# "pkts=92786175", '"ts": 1764151755': a bare number that is the value of a key is a measurement or an id.
_KEY_BEFORE = re.compile(r"\w(?:=|\": ?)$")
_DIGITS_ONLY = re.compile(r"[\d()+]")


# How sure a valid number makes a phone (Redactor._phone): surely, where a phone word names it, unless a barcode word is.
_PHONE, _NAMED_PHONE, _UNLESS_BARCODE = 1, 2, 3
_SERIAL_LABELS = frozenset({"s/n", "sn", "serial", "p/n", "pn", "part", "lot", "batch"})
_SERIAL_WORDS = frozenset({"serial", "part"})  # those a "no", "nr" or "number" may follow
_SERIAL_SUFFIXES = frozenset({"no", "nr", "number"})
# Labels of ids and counts: a bare number after one is no phone unless a phone word names it ("tel. no. 98765432").
_ID_WORDS = frozenset({"id", "uid", "guid", "no", "nr", "ref", "seq", "count", "cnt", "ticket", "order"})
_THOUSANDS = re.compile(r"[1-9]\d{0,2}(?:\.\d{3})+")  # 581.542.170: a count with thousands separators
_THOUSANDS_SPACED = re.compile(r"[1-9]\d{0,2}(?:[ \u00a0]\d{3})+")  # 12 345 678: a count, or a phone in some countries
# Words that name a phone number, lower case; a word is a run of letters (phone_number is "phone", "number"). Not
# "cell", "ring", "dial" or "ph": a battery's cell, a ring buffer, a dial's position and a pH are read before numbers.
_PHONE_WORDS = frozenset({
    "tel", "tél", "tele", "telephone", "téléphone", "telefon", "telefone", "telefono", "teléfono", "telefoon", "telefonnummer",
    "rufnummer", "puhelin", "tlf", "phone", "phones", "phonenumber", "mobile", "mobil", "mob", "mobileno", "cellphone",
    "handy", "handynummer", "fax", "call", "called", "calling", "contact", "kontakt", "contacto", "whatsapp", "sms",
    "telno", "phoneno", "тел", "телефон", "моб", "电话", "手机", "電話", "携帯", "전화", "휴대폰",
})  # fmt: skip
_BARCODE_WORDS = frozenset({"ean", "upc", "gtin", "barcode", "scan", "scanned", "scanner", "sku", "isbn", "plu", "article", "artikel"})
# Words that name a payment card or a payment, lower case, in the languages of Faker's locales; a word is a run of letters
# (card_number is "card", "number"; cardNumber is "cardnumber"), so compounds are listed whole.
_CARD_WORDS = frozenset({
    "card", "cards", "cardnumber", "cardno", "cardnum", "visa", "mastercard", "amex", "maestro", "cc", "ccn", "ccnum",
    "pan", "credit", "creditcard", "debit", "debitcard", "payment", "paid", "pay", "kredit", "kreditkarte", "karte",
    "kartennummer", "zahlung", "carte", "paiement", "tarjeta", "pago", "cartão", "cartao", "pagamento", "carta", "kort",
    "kortnummer", "kortti", "betaling", "betalning", "maksu", "kaart", "kaartnummer", "kart", "kartı", "kredi", "karta",
    "kartu", "płatność", "platba", "platební", "karty", "kartya", "kártya", "κάρτα", "карта", "карты", "картка", "оплата",
    "بطاقة", "כרטיס", "thẻ", "卡", "卡号", "信用卡", "银行卡", "銀行卡", "カード", "クレジットカード", "카드", "신용카드", "카드번호",
})  # fmt: skip
_WORD_OR_DIGIT = re.compile(r"[^\W\d_]+|\d")
# A phone written like a decimal (10.969512, 333.74068: how Armenia writes them), found only where a phone word names it.
_DECIMAL_PHONE = re.compile(r"(?<![\w.+-])\d{1,4}\.\d{4,9}(?![\w.])", re.ASCII)
_TRUNK_FORMATS: dict[str, tuple] = {}  # bounded: one entry per region libphonenumber knows


def _serial_before(text: str, start: int) -> bool:
    """Whether a serial number's label (S/N, SN, serial [no], P/N, part [no], lot, batch) ends where the run at ``start``
    opens, after at most three of " :=#."."""
    end = _label_end(text, start)
    # Each label ends in one of these letters: most runs are decided by the one character before them.
    if end == 0 or text[end - 1] not in "nNlLtThHoOrR":
        return False
    at = _word_start(text, end)
    word = text[at:end].lower()
    if word in _SERIAL_SUFFIXES:  # "serial no.", "part number": the label is the word before
        end = _label_end(text, at)
        at = _word_start(text, end)
        return end < at + 7 and text[at:end].lower() in _SERIAL_WORDS
    return word in _SERIAL_LABELS and (at == 0 or not text[at - 1].isalnum())


def _label_end(text: str, start: int) -> int:
    end = start
    while end > 0 and start - end < 4 and text[end - 1] in " :=#.\t":
        end -= 1
    return end


def _word_start(text: str, end: int) -> int:
    """Where the word (letters and "/", 8 at most) that ends at ``end`` starts."""
    at = end
    while at > 0 and end - at < 8 and (text[at - 1].isalpha() or text[at - 1] == "/"):
        at -= 1
    return at


def _secret_field(name: str) -> bool:
    """Whether a form field's name is a secret's: it ends in one as a word, in any case (confirmPassword, user[password])."""
    return _FIELD_NAME.search(_CAMEL.sub("_", name).lower()) is not None


def _form_fields(text: str, add: Callable[[tuple[int, int, str]], None]) -> None:
    """The values of form fields named as secrets, or of type password: in markup tags and JSON name/value pairs."""
    if "<" in text:
        for tag in _FORM_TAG.finditer(text):
            attributes = {match.group(1).lower(): match for match in _ATTRIBUTE.finditer(tag.group())}
            value, name, kind = attributes.get("value"), attributes.get("name"), attributes.get("type")
            if value is None or not (
                name is not None and _secret_field(_attribute(name)) or kind is not None and _attribute(kind).lower() == "password"
            ):
                continue
            group = next(group for group in (2, 3, 4) if value.group(group) is not None)
            if value.end(group) > value.start(group):
                add((tag.start() + value.start(group), tag.start() + value.end(group), "<SECRET>"))
    if ":" in text:
        for pair in _FORM_JSON.finditer(text):
            name, first = (pair.group(3), 5) if pair.group(3) is not None else (pair.group(14), 9)
            if _secret_field(name):
                group = next(group for group in (first, first + 1, first + 2) if pair.group(group) is not None)
                if pair.end(group) > pair.start(group):
                    add((pair.start(group), pair.end(group), "<SECRET>"))


def _attribute(match: re.Match[str]) -> str:
    """An attribute's value, whichever way it is quoted."""
    return match.group(2) if match.group(2) is not None else match.group(3) if match.group(3) is not None else match.group(4)


def _markup_before(text: str, at: int) -> bool:
    """Whether a tag is in the text before ``at``: then "<" ends a secret's value, as markup escapes its own."""
    return "<" in text and _TAG.search(text, 0, at) is not None


def _phone_named(text: str, at: int) -> bool:
    """Whether a phone word is among the three words (runs of letters) in the 40 characters before the number that
    starts at ``at``, with no digit between ("Tel.: ", "call back ", '"contact":"')."""
    low = at - 40 if at > 40 else 0
    end = at
    for _ in range(3):
        while end > low:
            char = text[end - 1]
            if char.isalpha():
                break
            if char.isdecimal():
                return False
            end -= 1
        if end == low:
            return False
        start = end - 1
        while start > low and text[start - 1].isalpha():
            start -= 1
        if text[start:end].lower() in _PHONE_WORDS:
            return True
        end = start
    return False


def _named(text: str, words: frozenset[str]) -> bool:
    """Whether any of ``words`` is a word of ``text``."""
    for token in _WORD_OR_DIGIT.findall(text):
        if token.lower() in words:
            return True
    return False


def _not_a_phone_here(text: str, piece: str, at: int) -> bool:
    """Whether a bare piece that starts at ``at`` is no phone whatever libphonenumber says (Redactor._phone would call
    it _NAMED_PHONE or _UNLESS_BARCODE, and the text says no): an epoch second or millisecond no phone word names, or an
    EAN barcode in a text with a barcode word. Asked before libphonenumber, which costs more."""
    size = len(piece)
    if not (size == 8 or size == 10 or size == 13) or not (piece.isascii() and piece.isdigit()):
        return False
    if size != 8 and piece[0] == "1":
        return not _phone_named(text, at)
    return size != 10 and ean_ok(piece) and _named(text, _BARCODE_WORDS)


def _phone_here(text: str, at: int, strength: int) -> bool:
    """Whether a number of this strength (_NAMED_PHONE or _UNLESS_BARCODE) that starts at ``at`` is a phone in ``text``."""
    if strength == _NAMED_PHONE:
        return _phone_named(text, at)
    return not _named(text, _BARCODE_WORDS)


def _barcode(text: str, digits: str) -> bool:
    """Whether 13 unseparated digits are an EAN-13 barcode: they carry its check digit and no card word is in the text."""
    return ean_ok(digits) and not _named(text, _CARD_WORDS)


def _trunk_formats(region: str) -> tuple[str, tuple[tuple[re.Pattern[str] | None, re.Pattern[str], bool], ...]]:
    """A region's trunk prefix and its national formats: (leading digits, pattern, whether the number is written with the
    prefix: the format's rule carries it and does not call it optional), compiled once per region."""
    known = _TRUNK_FORMATS.get(region)
    if known is None:
        metadata = _phonenumbers().PhoneMetadata.metadata_for_region(region)
        prefix = (metadata.national_prefix or "") if metadata is not None else ""
        forms = tuple(
            (re.compile(form.leading_digits_pattern[-1]) if form.leading_digits_pattern else None, re.compile(form.pattern),
             bool(prefix) and prefix in (form.national_prefix_formatting_rule or "") and not form.national_prefix_optional_when_formatting)
            for form in (metadata.number_format if metadata is not None and prefix else ())
        )  # fmt: skip
        known = _TRUNK_FORMATS[region] = (prefix, forms)
    return known


def _prefix_left_out(number, region: str, body: str) -> bool:
    """Whether ``body`` leaves out the trunk prefix its country writes before this national number: libphonenumber's
    national format for it carries one (0581-54 21 70), and does not call it optional (India's mobiles, China's); a
    number no format fits, where its formats carry one."""
    prefix, forms = _trunk_formats(region)
    if not prefix or body.startswith(prefix):
        return False
    national = _phonenumbers().national_significant_number(number)
    for leading, pattern, written in forms:
        if (leading is None or leading.match(national) is not None) and pattern.fullmatch(national) is not None:
            return written
    # A number no format fits (Germany's pagers): written with the prefix where any of its country's formats is.
    return any(written for _, _, written in forms)


def _measured(text: str, end: int) -> bool:
    """Whether a unit follows the number that ends at ``end``."""
    return end < len(text) and _UNIT_AFTER.match(text, end) is not None


def _one_number(chunk: str, groups: list[tuple[int, int]], sizes: list[int], k: int, inner: int, strong: bool) -> bool:
    """Whether groups k - 1 and k are one number: joined by no space, or, for a hit that is not ``strong``, continuing
    one grouping across it (the group ``inner``, the hit's next group from the cut, has their size and separator)."""
    between = chunk[groups[k - 1][1] : groups[k][0]]
    if " " not in between:
        return True
    if strong or inner == -1:
        return False
    pair = min(inner, k)
    return sizes[k - 1] == sizes[k] == sizes[inner] and between == chunk[groups[pair][1] : groups[pair + 1][0]]


def _extension(piece: str) -> re.Match[str] | None:
    """``_EXTENSION.search(piece)``, searched only where it could be: each form holds an "x" or "#" (none folds to x)."""
    return _EXTENSION.search(piece) if "x" in piece or "X" in piece or "#" in piece else None


def _after_key(text: str, start: int) -> bool:
    """Whether what ends at ``start`` is a key (``pkts=``, ``"ts": ``) that no phone word names: what follows is a
    counter or an id, not a phone (an id's label, "id: ", is _id_label's)."""
    # _KEY_BEFORE ends in "=", ":" or " ", so most runs are decided by one character.
    return (
        start > 0 and text[start - 1] in "=: " and _KEY_BEFORE.search(text, max(0, start - 5), start) is not None  # 5: its longest match
        and not _phone_named(text, start)
    )  # fmt: skip


def _id_label(text: str, start: int) -> bool:
    """Whether an id's or a count's label (id, device_id, userId, no, nr, ref, seq, count...) ends where the run at
    ``start`` opens, after at most three of " :=#."."""
    end = _label_end(text, start)
    # Each label ends in one of these letters: most runs are decided by the one character before them.
    if end == 0 or text[end - 1] not in "dDoOrRqQtTfF":
        return False
    at = end
    while at > 0 and end - at < 24 and (text[at - 1].isalpha() or text[at - 1] == "_" or text[at - 1] == "-"):
        at -= 1
    if at == end or at > 0 and text[at - 1].isalnum():
        return False
    word = text[at:end]
    low = word.lower()
    return low in _ID_WORDS or low.endswith(("_id", "-id")) or word.endswith("Id") and len(word) > 2 and word[-3].islower()


def _is_key(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]``, before an "=", reads as a parameter's name: it opens with a letter or "_" ("0=" does not)."""
    name = text[start:end].rsplit("&", 1)[-1].rsplit("?", 1)[-1]
    return bool(name) and (name[0].isalpha() or name[0] == "_")


def _local_char(char: str) -> bool:
    """A character of an e-mail's local part: letters and digits of any script (with their combining marks)."""
    return char.isalnum() or char in _EMAIL_LOCAL or (char > "\x7f" and (unicodedata.category(char)[0] == "M" or char in "\u200c\u200d"))


_QUOTED_WORD = re.compile(r'"(?:[^"\\\r\n]|\\[^\r\n]){1,64}"')  # RFC 5322 quoted-string, on one line, 64 at most (RFC 5321)


def _quoted_word(text: str, end: int) -> int:
    """Where the quoted string that closes at ``text[end - 1]`` opens, or -1: the farthest quote within 66 characters
    from which it is one quoted string (a nearer one may be an escaped quote inside it)."""
    opening = -1
    low = max(0, end - 66)
    quote = text.rfind('"', low, end - 1)
    while quote != -1:
        if _QUOTED_WORD.fullmatch(text, quote, end) is not None:
            opening = quote
        quote = text.rfind('"', low, quote)
    return opening


def _glued(char: str) -> bool:
    return char.isalnum() or char == "_" or char == "§"


def _encoded_local_char(char: str) -> bool:
    return char.isalnum() or char in _ENCODED_LOCAL or (char > "\x7f" and unicodedata.category(char)[0] == "M")


def _escape_before(text: str, end: int) -> int:
    """Where the "%XX" escape ending at ``end`` opens, also one encoded again ("%252E" is "%2E" is "."), or ``end``
    where none ends there: at most _MAX_ENCODINGS decodings."""
    if end < 3 or not (_hex(text[end - 2]) and _hex(text[end - 1])):
        return end
    start = end - 2
    for _ in range(_MAX_ENCODINGS):
        if text[start - 1] == "%":
            return start - 1
        if start < 3 or text[start - 2 : start] != "25":
            break
        start -= 2
    return end


def _encoded_local_start(text: str, end: int) -> int:
    """Where the URL-encoded local part that ends at ``end`` starts: back over its characters and the escapes of
    characters a local part holds (%2E, %2B, UTF-8's %D9%81); an escaped quote, space, "=", "&", "/" or "?" ends it, as a bare "%" does."""
    start = end
    while start > 0:
        opening = _escape_before(text, start)
        if opening != start:
            decoded = chr(int(text[start - 2 : start], 16))
            # A byte over 0x7f is part of a UTF-8 letter (%D9%81): Unicode local parts are addresses too.
            if not (decoded > "\x7f" or decoded.isalnum() or decoded in _ENCODED_LOCAL):
                break
            start = opening
        elif _encoded_local_char(text[start - 1]):
            start -= 1
        else:
            break
    return start


def _encoded_quoted_start(text: str, end: int) -> int:
    """Where the encoded quoted local part (%22john%20smith%22) that ends at ``end`` opens, or ``end``: the farthest
    %22 within 200 characters from which the decoded text is one quoted string."""
    opening = end
    low = max(0, end - 200)
    quote = text.rfind("%22", low, end - 3)
    while quote != -1:
        if _QUOTED_WORD.fullmatch(unquote(text[quote:end])) is not None:
            opening = quote
        quote = text.rfind("%22", low, quote)
    return opening


def _balanced(piece: str) -> str:
    """The piece without outer spaces, an outer pair of brackets, or a bracket with no partner inside it."""
    piece = piece.strip(" \u00a0")
    if piece.startswith("(") and piece.endswith(")"):
        depth = 0
        for position, char in enumerate(piece):
            depth += (char == "(") - (char == ")")
            if depth == 0:
                break
        if position == len(piece) - 1:
            piece = piece[1:-1].strip(" ")
    if piece.startswith("(") and piece.count("(") > piece.count(")"):
        piece = piece[1:].lstrip(" ")
    if piece.endswith(")") and piece.count("(") < piece.count(")"):
        piece = piece[:-1].rstrip(" ")
    return piece


def _blank(match: re.Match[str]) -> str:
    return "§" * (match.end() - match.start())


_IPV6_GROUPS = re.compile(r"(?:[0-9A-Fa-f]{0,4}:)+(?:[0-9A-Fa-f]{0,4}|[0-9.]+)")


def _ipv6_ok(candidate: str) -> bool:
    colons = candidate.count(":")
    if colons < 2 or candidate == "::":
        return False
    # ipaddress's own rule for the groups (four hex digits at most, a dotted IPv4 last), without its ValueError's cost.
    if _IPV6_GROUPS.fullmatch(candidate.partition("%")[0]) is None:
        return False
    # Without a decimal digit only all eight groups: "dead::beef" is as often words as an address.
    if colons != 7 and not _any_digit(candidate):
        return False
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


def _iban_length(span: str) -> int | None:
    """How much of the span is a valid IBAN: all of it, or its first groups of four (the span may run on into a
    following word); never part of a group, which would leave the rest of the token behind."""
    if " " not in span:
        return len(span) if _iban_found(span) else None
    groups = span.split(" ")
    for count in range(len(groups), 0, -1):
        candidate = "".join(groups[:count])
        if _iban_found(candidate):
            return len(" ".join(groups[:count]))
    return None


def _iban_found(compact: str) -> bool:
    """An IBAN without spaces, in any case: its country's length, and mod-97."""
    upper = compact.upper()
    return _IBAN_LENGTHS.get(upper[:2]) == len(upper) and iban_ok(upper)


def _basic_credentials(token: str) -> bool:
    """Whether a token is what RFC 7617 sends: base64 of printable "user-id:password"."""
    if len(token) % 4:
        return False
    try:
        decoded = base64.b64decode(token, validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return False
    return ":" in decoded and decoded.isprintable()


def _valid(validator: Validator | None, text: str) -> bool:
    if validator is None:
        return True
    if validator == "luhn":
        digits = _NOT_DIGIT.sub("", text)
        return len(digits) >= 2 and luhn_ok(digits)
    return iban_ok(re.sub(r"[\s-]", "", text).upper())


def _replace(text: str, spans: list[tuple[int, int, str]]) -> str:
    """``text`` with each span replaced by its placeholder; the text itself when there are none."""
    if not spans:
        return text
    pieces, done = [], 0
    for start, end, placeholder in spans:
        pieces.append(text[done:start])
        pieces.append(placeholder)
        done = end
    pieces.append(text[done:])
    return "".join(pieces)


def _settle(found: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Overlapping findings: the earliest wins, then the longest."""
    found.sort(key=lambda span: (span[0], -span[1]))
    settled: list[tuple[int, int, str]] = []
    end = -1
    for span in found:
        if span[0] >= end:
            settled.append(span)
            end = span[1]
    return settled


_DEFAULT = Redactor()


def redact(text: str) -> str:
    """``text`` redacted with the default rules (no phone regions: only international numbers)."""
    return _DEFAULT.redact(text)


def _compiled() -> ModuleType | None:
    """This file compiled by Cython (setup.py builds it as ``_redact_fast`` where a C compiler is), when it was
    built from this very text: a build left over from an older redact.py is not used."""
    if __name__.rpartition(".")[2] == "_redact_fast":
        return None  # this is the compiled module itself
    try:
        from edgeloop.collector import _redact_fast
    except ImportError:
        return None
    try:
        with open(__file__, "rb") as source:
            text = source.read()
    except OSError:  # only bytecode installed: nothing to check the build against
        return None
    return _redact_fast if hashlib.sha256(text).hexdigest() == getattr(_redact_fast, "_SOURCE_SHA256", None) else None


_PureRedactor = Redactor  # the reference the compiled redactor is tested against
_fast = _compiled()
COMPILED = _fast is not None
"""Whether ``Redactor`` and the functions below are the compiled build of this module (same text, same output)."""
if _fast is not None:
    Redactor = _fast.Redactor  # type: ignore[misc]
    redact = _fast.redact
    luhn_ok, iban_ok, card_ok = _fast.luhn_ok, _fast.iban_ok, _fast.card_ok
    ssn_ok, nino_ok = _fast.ssn_ok, _fast.nino_ok
    aadhaar_ok, cpf_ok, cnpj_ok, dni_ok, fiscal_code_ok = _fast.aadhaar_ok, _fast.cpf_ok, _fast.cnpj_ok, _fast.dni_ok, _fast.fiscal_code_ok
    pesel_ok, bsn_ok, personnummer_ok, hetu_ok, cpr_ok = _fast.pesel_ok, _fast.bsn_ok, _fast.personnummer_ok, _fast.hetu_ok, _fast.cpr_ok
    resident_id_ok, nric_ok, rrn_ok, tfn_ok, medicare_ok = _fast.resident_id_ok, _fast.nric_ok, _fast.rrn_ok, _fast.tfn_ok, _fast.medicare_ok
