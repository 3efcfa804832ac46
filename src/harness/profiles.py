"""cProfile figures of a benchmark: the entries of a profile, the seconds spent in one
function (its own time or with its callees), every entry's own time, and where an entry
is, as `package/file.py:line function`."""

from __future__ import annotations

import cProfile
import pstats
from pathlib import Path
from typing import Any

# (file, line, function) → (calls, primitive calls, own seconds, cumulative seconds, callers)
Entries = dict[tuple[str, int, str], tuple[int, int, float, float, Any]]


def entries(profiler: cProfile.Profile) -> Entries:
    """The entries of PROFILER's profile (pstats keeps them untyped, as `stats`)."""
    stats: Entries = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    return stats


def seconds_in(stats: Entries, file: str, function: str, own: bool = False) -> float:
    """Seconds in FUNCTION of a file whose path ends with FILE ("~" for a built-in),
    summed over its entries: with its callees, or only its OWN time."""
    return sum(own_time if own else cumulative
               for (path, _, name), (_, _, own_time, cumulative, _) in stats.items()
               if name == function and path.endswith(file))


def where(path: str, line: int, name: str) -> str:
    """A profile entry as `package/file.py:line function` (or the built-in's name)."""
    if path == "~":
        return name
    return f"{'/'.join(Path(path).parts[-2:])}:{line} {name}"


def own_times(stats: Entries) -> list[tuple[float, str]]:
    """Each entry's own seconds and where() it is, the most first."""
    return sorted(((own_time, where(*entry))
                   for entry, (_, _, own_time, _, _) in stats.items()), reverse=True)
