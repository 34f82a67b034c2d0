"""Scrub personal data out of free text: the ``redact`` privacy rule.

Replaced with typed placeholders::

    e-mail addresses                                   <EMAIL>
    IPv4 and IPv6 addresses (incl. ::1 compressed)     <IPV4> <IPV6>
    IBANs that pass the mod-97 check                   <IBAN>
    payment card numbers, 13-19 digits, passing Luhn   <CARD>
    phone numbers: international (+44 20 7946 0958,    <PHONE>
    +1-202-555-0143) and national ((202) 555-0143,
    202-555-0143, 020 7946 0958, 0171 1234567)

Digit runs that look like a card or IBAN but fail its checksum are left alone, so a part
number survives. A national number needs a separator ("0171 1234567", not "01711234567"):
a bare digit run that starts with 0 is more often a serial than a phone.

One compiled regex finds every candidate in a single pass; each alternative starts only at
a token boundary, so the scan stays linear. Text without a digit, ``@`` or ``:`` cannot
hold any of these and skips the regex entirely.
"""

from __future__ import annotations

import re

__all__ = ["PLACEHOLDERS", "redact"]

PLACEHOLDERS = ("<EMAIL>", "<IPV4>", "<IPV6>", "<IBAN>", "<CARD>", "<PHONE>")

_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = rf"(?<![\w.!#$%&'*+/=?^`{{|}}~-])(?:{_LOCAL}|\.)++@(?:{_LABEL}\.)+[A-Za-z](?:[A-Za-z0-9-]*[A-Za-z0-9])?"

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.\d)"

_H = r"[0-9A-Fa-f]{1,4}"
_V4TAIL = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
# Longest forms first: the regex takes the first alternative that matches.
_IPV6_FORMS = (
    rf"(?:{_H}:){{6}}{_V4TAIL}",
    rf"(?:{_H}:){{7}}{_H}",
    rf"::(?:[Ff]{{4}}(?::0{{1,4}})?:)?{_V4TAIL}",
    rf"(?:{_H}:){{1,5}}:{_V4TAIL}",
    rf"(?:{_H}:){{1,6}}:{_H}",
    rf"(?:{_H}:){{1,5}}(?::{_H}){{2}}",
    rf"(?:{_H}:){{1,4}}(?::{_H}){{3}}",
    rf"(?:{_H}:){{1,3}}(?::{_H}){{4}}",
    rf"(?:{_H}:){{1,2}}(?::{_H}){{5}}",
    rf"{_H}:(?::{_H}){{6}}",
    rf"::(?:{_H}:){{0,6}}{_H}",
    rf"(?:{_H}:){{1,7}}:",
)
_IPV6 = rf"(?<![\w:.])(?:{'|'.join(_IPV6_FORMS)})(?:%[\w.]+)?(?![\w:]|\.\d)"

_IBAN = r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?:[ ]?[A-Za-z0-9]{4}){2,7}(?:[ ]?[A-Za-z0-9]{1,3})?(?![A-Za-z0-9])"

# Unseparated 13-19 digits, or groups of four (Visa, Mastercard...), or 4-6-5/4-6-4 (Amex, Diners).
_CARD = (
    r"(?<![\d.,])(?:\d{13,19}"
    r"|\d{4}(?P<sep>[ -])\d{4}(?P=sep)\d{4}(?P=sep)\d{1,4}(?:(?P=sep)\d{1,3})?"
    r"|\d{4}(?P<sep2>[ -])\d{6}(?P=sep2)\d{4,5})(?![\d]|[.,]\d)"
)

_PHONE_INTL = r"\+[1-9]\d{0,2}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,5})){1,6}"
_PHONE_NANP = r"(?:\(\d{3}\)[ ]?|\d{3}[ .-])\d{3}[ .-]\d{4}"
_PHONE_TRUNK = r"\(?0\d{1,4}\)?(?:[ -]\d{3,8}){1,3}"
_PHONE_FR = r"0[1-9](?:[ .]\d{2}){4}"
_PHONE = rf"(?<![\w+])(?<!\d[ .-])(?:{_PHONE_INTL}|{_PHONE_NANP}|{_PHONE_TRUNK}|{_PHONE_FR})(?![\w]|[ .-]\d)"

_PATTERN = re.compile(
    rf"(?P<email>{_EMAIL})|(?P<ipv6>{_IPV6})|(?P<ipv4>{_IPV4})|(?P<iban>{_IBAN})|(?P<card>{_CARD})|(?P<phone>{_PHONE})"
)
# The same candidates minus cards and IBANs: what a span that failed its checksum may still hold.
_FALLBACK = re.compile(rf"(?P<phone>{_PHONE})")
_MAY_HOLD_PII = re.compile(r"[\d@:]")

_IBAN_LENGTHS = range(15, 35)


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
    if len(iban) not in _IBAN_LENGTHS or not iban[2:4].isdigit():
        return False
    rearranged = iban[4:] + iban[:4]
    try:
        return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1
    except ValueError:
        return False


def _iban(span: str) -> str | None:
    """The span with its IBAN replaced, trying shorter runs of groups if the whole fails."""
    groups = span.split(" ") if " " in span else [span]
    # A compact IBAN is one token; try each length the checksum allows, longest first.
    if len(groups) == 1:
        compact = span.upper()
        for end in range(len(compact), 14, -1):
            if iban_ok(compact[:end]):
                return "<IBAN>" + span[end:]
        return None
    for count in range(len(groups), 0, -1):
        if iban_ok("".join(groups[:count]).upper()):
            rest = " ".join(groups[count:])
            return "<IBAN>" + (" " + rest if rest else "")
    return None


def _card(span: str, sep: str | None) -> str | None:
    """The span with its card number replaced; a grouped run may carry a trailing group that is not the card's."""
    if sep is None:
        return "<CARD>" if luhn_ok(span) else None
    groups = span.split(sep)
    for count in range(len(groups), 2, -1):
        digits = "".join(groups[:count])
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            rest = sep.join(groups[count:])
            return "<CARD>" + (sep + rest if rest else "")
    return None


def _phone_ok(span: str) -> bool:
    digits = sum(char.isdigit() for char in span)
    return 7 <= digits <= 15


def _replace(match: re.Match[str]) -> str:
    kind = match.lastgroup
    span = match.group()
    if kind == "card":
        replaced = _card(span, match.group("sep") or match.group("sep2"))
        return replaced if replaced is not None else _FALLBACK.sub(_replace, span)
    if kind == "iban":
        replaced = _iban(span)
        return replaced if replaced is not None else span
    if kind == "phone":
        return "<PHONE>" if _phone_ok(span) else span
    return f"<{kind.upper()}>"  # type: ignore[union-attr]


def redact(text: str) -> str:
    """``text`` with every e-mail, phone, IP, valid card number and valid IBAN replaced."""
    if _MAY_HOLD_PII.search(text) is None:
        return text
    return _PATTERN.sub(_replace, text)
