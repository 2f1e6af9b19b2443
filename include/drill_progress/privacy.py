"""Keep personal data out of logs: phone numbers are never logged in full."""

from __future__ import annotations

import re

_PHONE = re.compile(r"\+?\d[\d\s().-]{5,}\d")


def mask_phone(phone: str | None) -> str:
    """'+15551230001' -> '+1555***0001': enough to correlate, not enough to call."""
    if not phone:
        return "<none>"
    if len(phone) <= 6:
        return "*" * len(phone)
    return f"{phone[:5]}***{phone[-4:]}"


def mask_phones_in(text: str) -> str:
    """Mask every phone-number-like run of digits in free text (error messages, reasons)."""
    return _PHONE.sub(lambda m: mask_phone(re.sub(r"[^\d+]", "", m.group(0))), text)
