"""The syntax of config.env and .env, strictly: every line is `KEY=VALUE` (optionally
`export KEY=VALUE`), a comment or blank. A value may be bare (an inline comment starts
at ` #`), 'single-quoted' (taken as is) or "double-quoted" (`\\"` and `\\\\` escaped); a
quote that is opened and never closed is an error, never a value silently cut short.
Anything else is an error naming file:line, so a typo cannot pass for a setting.

Pure: `parse` takes text; `read` adds the file. Which keys exist is config's business.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

_ASSIGNMENT = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)")


class Assignment(NamedTuple):
    key: str
    value: str
    where: str  # "path:line"


class EnvFileError(ValueError):
    """A line that is not an assignment, a comment or blank; the message names file:line."""


def parse(text: str, name: str) -> list[Assignment]:
    found = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{name}:{number}"
        match = _ASSIGNMENT.fullmatch(line)
        if not match:
            raise EnvFileError(f"{where}: {_shown(line)!r} is not KEY=VALUE, a comment or "
                               "blank")
        found.append(Assignment(match.group(1), _value(match.group(2), where), where))
    return found


def read(path: Path) -> list[Assignment]:
    """The assignments of PATH (none if it does not exist)."""
    if not path.is_file():
        return []
    return parse(path.read_text(errors="replace"), str(path))


def _value(text: str, where: str) -> str:
    if text[:1] in ("'", '"'):
        return _quoted(text, where)
    return re.split(r"\s+#", text, maxsplit=1)[0].strip()


def _quoted(text: str, where: str) -> str:
    quote, body, i = text[0], [], 1
    while i < len(text):
        char = text[i]
        if quote == '"' and char == "\\" and i + 1 < len(text):
            body.append(text[i + 1])
            i += 2
            continue
        if char == quote:
            rest = text[i + 1:].strip()
            if rest and not rest.startswith("#"):
                raise EnvFileError(f"{where}: text after the closing quote ({_shown(rest)!r})")
            return "".join(body)
        body.append(char)
        i += 1
    raise EnvFileError(f"{where}: the value opens with {quote} and never closes it; "
                       f"expected {quote}...{quote} on one line")


def _shown(text: str) -> str:
    """A line as it may be shown: the key and at most the value's first characters (a
    misspelt secret's value must not reach a terminal or a log)."""
    key, sep, value = text.partition("=")
    return f"{key}{sep}…" if sep and value else text[:60]


def nearest(name: str, known: Iterable[str]) -> str:
    """" (did you mean REDIS_PORT?)" for a misspelt key, or ""."""
    close = difflib.get_close_matches(name.upper(), list(known), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""
