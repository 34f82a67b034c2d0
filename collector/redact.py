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
a bare digit run that starts with 0 is more often a serial than a phone. The bare IPv6
unspecified address ``::`` is left alone: it names no one, and "::" is common in other text.

One compiled regex describes every kind. Rather than let it try each of its alternatives
at every character (slow in Python's engine), ``redact`` jumps between the characters every
match must contain (a digit, ``@``, ``:``, ``+``, ``(``) and tries the regex only where a
match could start: at such a character, or at the start of the word before it. A candidate
that fails its checksum is passed over and the scan goes on inside it, so "+1 4111 1111
1111 1111" still loses its card. Text without a digit, ``@`` or ``:`` is returned after a
few ``in`` checks.
"""

from __future__ import annotations

import re

__all__ = ["PLACEHOLDERS", "redact"]

PLACEHOLDERS = ("<EMAIL>", "<IPV4>", "<IPV6>", "<IBAN>", "<CARD>", "<PHONE>")

_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = rf"(?<![\w.!#$%&'*+/=?^`{{|}}~-])(?:{_LOCAL}|\.)++@(?:{_LABEL}\.)+[A-Za-z](?:[A-Za-z0-9-]*[A-Za-z0-9])?"

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = rf"(?<![\w.])(?=\d{{1,3}}\.){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.\d)"

_H = r"[0-9A-Fa-f]{1,4}"
_V4TAIL = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
# Longest forms first: the regex takes the first alternative that matches. Each kind opens with a
# lookahead for what it must start with, so a try at the wrong place fails in a step or two.
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
_IPV6 = rf"(?<![\w:.])(?=[0-9A-Fa-f]{{0,4}}:)(?:{'|'.join(_IPV6_FORMS)})(?:%[\w.]+)?(?![\w:]|\.\d)"

_IBAN = r"(?<!\w)[A-Za-z]{2}\d{2}(?:[ ]?[A-Za-z0-9]{4}){2,7}(?:[ ]?[A-Za-z0-9]{1,3})?(?![A-Za-z0-9])"

# Unseparated 13-19 digits, or groups of four (Visa, Mastercard...), or 4-6-5/4-6-4 (Amex, Diners).
_CARD = (
    r"(?<![\d.,])(?=\d{4})(?:\d{13,19}"
    r"|\d{4}(?P<sep>[ -])\d{4}(?P=sep)\d{4}(?P=sep)\d{1,4}(?:(?P=sep)\d{1,3})?"
    r"|\d{4}(?P<sep2>[ -])\d{6}(?P=sep2)\d{4,5})(?![\d]|[.,]\d)"
)

_PHONE_INTL = r"\+[1-9]\d{0,2}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,5})){1,6}"
_PHONE_NANP = r"(?:\(\d{3}\)[ ]?|\d{3}[ .-])\d{3}[ .-]\d{4}"
_PHONE_TRUNK = r"\(?0\d{1,4}\)?(?:[ -]\d{3,8}){1,3}"
_PHONE_FR = r"0[1-9](?:[ .]\d{2}){4}"
_PHONE = rf"(?<![\w+])(?=[+(0]|\d{{3}}[ .-])(?:{_PHONE_INTL}|{_PHONE_NANP}|{_PHONE_TRUNK}|{_PHONE_FR})(?!\w)"

_KINDS = {"email": _EMAIL, "ipv6": _IPV6, "ipv4": _IPV4, "iban": _IBAN, "card": _CARD, "phone": _PHONE}


def _compile(*kinds: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?P<{kind}>{_KINDS[kind]})" for kind in kinds), re.ASCII)


_PATTERN = _compile(*_KINDS)
# Without an "@" no e-mail can match, without a ":" no IPv6: leaving them out makes each try cheaper.
_VARIANTS = {
    (True, True): _PATTERN,
    (True, False): _compile("email", "ipv4", "iban", "card", "phone"),
    (False, True): _compile("ipv6", "ipv4", "iban", "card", "phone"),
    (False, False): _compile("ipv4", "iban", "card", "phone"),
}
# Every match holds one of these; runs of them are where the scan stops.
_ANCHORS = re.compile(r"[0-9@:+(]+")
_GATE = tuple("0123456789@:")
_DIGITS = frozenset("0123456789")
_HEX = frozenset("0123456789abcdefABCDEF:")
_WORD = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_LOCAL = _WORD | frozenset("!#$%&'*+/=?^`{|}~.-")

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


def _iban_length(span: str) -> int | None:
    """How much of the span is a valid IBAN: the span may run on into a following word."""
    if " " not in span:
        compact = span.upper()
        for end in range(min(len(compact), 34), 14, -1):
            if iban_ok(compact[:end]):
                return end
        return None
    groups = span.split(" ")
    for count in range(len(groups), 0, -1):
        if iban_ok("".join(groups[:count]).upper()):
            return len(" ".join(groups[:count]))
    return None


def _card_length(span: str, sep: str | None) -> int | None:
    """How much of the span is a card number passing Luhn: a grouped run may carry a group that is not the card's."""
    if sep is None:
        return len(span) if luhn_ok(span) else None
    groups = span.split(sep)
    for count in range(len(groups), 2, -1):
        digits = "".join(groups[:count])
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            return len(sep.join(groups[:count]))
    return None


def _found(match: re.Match[str]) -> tuple[str, int] | None:
    """The placeholder for a candidate and where its PII ends, or None if its checksum fails."""
    kind = match.lastgroup
    start, end = match.span()
    if kind == "card":
        length = _card_length(match.group(), match.group("sep") or match.group("sep2"))
        return None if length is None else ("<CARD>", start + length)
    if kind == "iban":
        length = _iban_length(match.group())
        return None if length is None else ("<IBAN>", start + length)
    if kind == "phone":
        digits = sum(char.isdigit() for char in match.group())
        return ("<PHONE>", end) if 7 <= digits <= 15 else None
    return f"<{kind.upper()}>", end  # type: ignore[union-attr]


def redact(text: str) -> str:
    """``text`` with every e-mail, phone, IP, valid card number and valid IBAN replaced."""
    for char in _GATE:
        if char in text:
            break
    else:
        return text
    pieces: list[str] = []
    done = 0  # text[:done] is settled: copied to pieces or replaced
    tried = 0  # every start before this was tried already
    find = _ANCHORS.search
    has_at, has_colon = "@" in text, ":" in text
    match = _VARIANTS[has_at, has_colon].match
    anchor = find(text)
    while anchor is not None:
        start, end = anchor.span()
        # A match may begin earlier in the word that leads to the anchor (an e-mail's local part, an IBAN's letters).
        first = start
        floor = max(done, tried)
        while first > floor and text[first - 1] in _LOCAL:
            first -= 1
        found = None
        for at in range(first, end):
            # Every kind refuses to start right after a word character, except a card after a letter;
            # before the anchor only an e-mail, an IPv6 (hex letters) or an IBAN (two letters) can start.
            before = text[at - 1] if at else " "
            if at < start and not (has_at or (has_colon and text[at] in _HEX) or at == start - 2):
                continue
            if before not in _WORD or (before not in _DIGITS and text[at] in _DIGITS):
                candidate = match(text, at)
                if candidate is not None:
                    found = _found(candidate)
                    if found is not None:
                        pieces.append(text[done:at])
                        break
        if found is None:
            tried = end
            anchor = find(text, end)
            continue
        pieces.append(found[0])
        done = tried = found[1]
        anchor = find(text, done)
    if not pieces:
        return text
    pieces.append(text[done:])
    return "".join(pieces)
