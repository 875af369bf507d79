"""Optional scrubbing of personal data: e-mail addresses, phone numbers, IP addresses.

Matches are replaced by a placeholder (``<email>``, ``<phone>``, ``<ip>``) rather than deleted,
so sentences stay grammatical and a model learns where such data stood without learning it. The
patterns are deliberately strict (a phone number needs 8+ digits with phone-style grouping; an
IPv4 address needs four octets of 0-255), because dates, years, ISBNs and section numbers are
far more common in encyclopaedic text than phone numbers.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter

PII_KINDS = ("email", "phone", "ip")

_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b")
_IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
_IPV6 = re.compile(
    r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])"
)  # checked below
# +46 8 123 45 67, (08) 123-45-67, 070-123 45 67, +7 (495) 123-45-67, 03-1234-5678 ...
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,5}\)[\s.-]?)?\d{1,5}(?:[\s.-]\d{2,5}){2,5}(?![\w-])"
)


_DATE = re.compile(r"\d{4}[-.]\d{1,2}[-.]\d{1,2}|\d{1,2}[-.]\d{1,2}[-.]\d{2,4}")


def _is_ip(candidate: str) -> bool:
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


def scrub_pii(text: str) -> tuple[str, Counter[str]]:
    """Replace e-mail addresses, IP addresses and phone numbers; count each kind replaced."""
    counts: Counter[str] = Counter()

    def replace(kind: str, placeholder: str, check=None):
        def substitute(match: re.Match) -> str:
            if check is not None and not check(match.group(0)):
                return match.group(0)
            counts[kind] += 1
            return placeholder

        return substitute

    text = _EMAIL.sub(replace("email", "<email>"), text)
    text = _IPV4.sub(replace("ip", "<ip>", _is_ip), text)
    text = _IPV6.sub(replace("ip", "<ip>", _is_ip), text)
    text = _PHONE.sub(replace("phone", "<phone>", _looks_like_phone), text)
    return text, counts


def _looks_like_phone(candidate: str) -> bool:
    """8-15 digits grouped the way phone numbers are, and not a date or a grouped amount.

    Groups separated only by spaces or dots are numbers ("15 000 000 rubles") or dates
    ("12.11.2004") far more often than phone numbers, so they count only after a country code
    (+46 ...) or an area code in parentheses; hyphenated groups (070-123 45 67) count as they are.
    """
    candidate = candidate.strip()
    digits = sum(ch.isdigit() for ch in candidate)
    if not 8 <= digits <= 15 or _DATE.fullmatch(candidate):
        return False
    return candidate.startswith(("+", "(")) or "-" in candidate
