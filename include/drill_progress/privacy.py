"""Keep personal data out of logs, errors and pages: phone numbers are never shown in full.

A masked phone number keeps at most its last 4 digits, and fewer for short numbers (a number of
n digits keeps n - 6 of them, at most 4), so that it is enough to correlate two log lines but
never enough to call: '+15551230001' -> '***0001', '+1234567' -> '***7', '12345' -> '***'.
"""

from __future__ import annotations

import re

KEPT_DIGITS = 4
_PHONE = re.compile(r"\+?\d[\d\s().-]{5,}\d")
_NOT_DIGIT = re.compile(r"\D")


def mask_phone(phone: str | None) -> str:
    """'+15551230001' -> '***0001': the last digits only (see the module's docstring)."""
    if not phone:
        return "<none>"
    digits = _NOT_DIGIT.sub("", phone)
    kept = min(KEPT_DIGITS, max(0, len(digits) - 6))
    return "***" + (digits[-kept:] if kept else "")


def mask_phones_in(text: str) -> str:
    """Mask every phone-number-like run of digits (7 or more characters) in free text."""
    return _PHONE.sub(lambda m: mask_phone(m.group(0)), text)


def safe_text(text: str | None, limit: int | None = None) -> str | None:
    """Any Python string made storable as PostgreSQL text: a lone surrogate becomes its
    backslash escape and NUL becomes '\\x00' (neither can be stored or sent); cut to `limit`."""
    if text is None:
        return None
    if not text.isascii() or "\x00" in text:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text if limit is None else text[:limit]
