"""Masking secrets in text: every log line our services write and every error the CLI
prints passes through `redact()`. It masks the values it is given (the settings' secrets)
and anything shaped like a Slack webhook URL or token. A leaf: it imports nothing of ours.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_SECRET_PATTERNS = (
    re.compile(r"https://hooks\.slack\.com/services/\S+"),
    re.compile(r"xox[abpr]-[A-Za-z0-9-]+"),
)


def redact(text: str, values: Iterable[str]) -> str:
    """Mask each secret value in TEXT, keeping its last 4 characters as a fingerprint."""
    for value in sorted(values, key=len, reverse=True):
        if len(value) >= 8:
            text = text.replace(value, "****" + value[-4:])
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub("****", text)
    return text

