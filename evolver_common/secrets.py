"""Secrets kept out of the records: a rig's literal `token=SECRET` is written `token=REDACTED` wherever a
spec is recorded or shown (config.json, folder names, sweep.json, messages)."""
from __future__ import annotations

import re

TOKEN_OPTION = re.compile(r"(token=)[^:\s'\"]+")
REDACTED = "REDACTED"  # what records hold instead of a literal token


def redact(text: str) -> str:
    """`text` with every literal `token=SECRET` written `token=REDACTED`, for anything recorded or shown."""
    return TOKEN_OPTION.sub(rf"\1{REDACTED}", text)
