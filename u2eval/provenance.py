"""Where a result came from: u2eval's version and git state, and stable hashes of id lists."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterable
from datetime import datetime, timezone
from functools import cache
from pathlib import Path

from u2eval import __version__

_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(_SOURCE_ROOT), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


@cache
def git_state() -> tuple[str | None, bool | None]:
    """(commit sha, dirty) of the checkout u2eval runs from; (None, None) for an installed wheel."""
    if not (_SOURCE_ROOT / ".git").exists():
        return None, None
    sha = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return sha, (bool(status) if status is not None else None)


def version() -> str:
    return __version__


def ids_sha256(ids: Iterable[str]) -> str:
    """sha256 of the sorted id list: two runs over the same cases share it, in whatever order they ran."""
    digest = hashlib.sha256()
    for case_id in sorted(ids):
        digest.update(case_id.encode() + b"\n")
    return digest.hexdigest()


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
