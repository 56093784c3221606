"""Where the data files that ship with u2eval live: the repository root in a source checkout, or
``u2eval/_data`` inside an installed wheel (see the force-include in pyproject.toml)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


@cache  # the install's layout does not change while it runs; task lookups ask for it on every call
def resource_dir(name: str) -> Path:
    """The ``tasks`` or ``prompts`` folder, whichever layout this install has."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"u2eval data folder {name!r} not found next to {_PACKAGE}")


def sample_dir() -> Path:
    """The bundled synthetic sample, in the exact U2-Bench folder layout."""
    return _PACKAGE / "sample"


def published_table() -> Path:
    """The paper's leaderboard (22 rows, the official scorer's numbers), as shipped with u2eval."""
    return _PACKAGE / "benchmark" / "published.csv"
