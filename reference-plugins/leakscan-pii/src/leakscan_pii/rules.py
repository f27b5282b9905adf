"""Detectors for personal data: e-mail addresses, phone numbers, card numbers, US SSNs.

Pure functions over strings, so they are tested without a host.
"""

from __future__ import annotations

import re

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}\b")
URL_USERINFO = re.compile(r"://[^\s/@]*$")
# International numbers start with "+"; North American ones are 3-3-4 with
# separators.  Both refuse neighbouring digits or dots, so version strings,
# IP addresses and timestamps don't match.
PHONE = re.compile(
    r"(?<![\w.+])(?:"
    r"\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}"
    r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}"
    r"|\d{3}[ .-]\d{3}[ .-]\d{4}"
    r")(?![\w.]?\d)"
)
# 13 to 19 digits, optionally grouped by single spaces or dashes.
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn checksum used by payment cards."""
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def card_brand(digits: str) -> str | None:
    """The card network a number's prefix and length belong to, or ``None``."""
    n = len(digits)
    if digits[0] == "4" and n in (13, 16, 19):
        return "visa"
    if n == 16 and (51 <= int(digits[:2]) <= 55 or 2221 <= int(digits[:4]) <= 2720):
        return "mastercard"
    if n == 15 and digits[:2] in ("34", "37"):
        return "amex"
    if n in (16, 19) and (digits.startswith("6011") or digits.startswith("65")):
        return "discover"
    return None


def find_pii(line: str) -> list[tuple[int, int, str, str]]:
    """``(start, end, rule, severity)`` for every piece of personal data in ``line``."""
    found: list[tuple[int, int, str, str]] = []
    for m in EMAIL.finditer(line):
        # "scheme://user:password@host" is a URL with credentials, not an address.
        if not URL_USERINFO.search(line, 0, m.start()):
            found.append((m.start(), m.end(), "email", "medium"))
    for m in CARD.finditer(line):
        digits = re.sub(r"[ -]", "", m.group())
        # The prefix check keeps Luhn's 1-in-10 chance from flagging long numeric IDs.
        if luhn_valid(digits) and card_brand(digits):
            found.append((m.start(), m.end(), "credit-card", "high"))
    for m in SSN.finditer(line):
        found.append((m.start(), m.end(), "us-ssn", "high"))
    taken = [(s, e) for s, e, _, _ in found]
    for m in PHONE.finditer(line):
        n_digits = sum(c.isdigit() for c in m.group())
        overlaps = any(s < m.end() and m.start() < e for s, e in taken)
        if 9 <= n_digits <= 15 and not overlaps:
            found.append((m.start(), m.end(), "phone", "medium"))
    return sorted(found)


def describe() -> str:
    """One line saying what this plugin detects."""
    return "personal data: email, phone, credit-card (Luhn-checked), us-ssn"
