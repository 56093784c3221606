"""Deterministic shards of a run: ``--shard i/n`` keeps the cases whose id hashes to ``i`` modulo ``n``.

The hash is of the case id alone, so a case lands in the same shard whatever the machine, the order of the
files or the other cases; the n shards of one selection partition it exactly. Shard runs are combined by
``u2eval merge`` (u2eval/run/merge.py).
"""

from __future__ import annotations

import hashlib
import re

from u2eval.errors import ConfigError

Shard = tuple[int, int]  # (index, count), 0 <= index < count

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_LABEL = re.compile(r"(?:^|; )shard=(\d+)/(\d+)(?:;|$)")


def parse_shard(text: str) -> Shard:
    """``"1/4"`` -> ``(1, 4)``; anything else is a ConfigError naming the expected form."""
    match = _SHARD.match(text)
    if match is None:
        raise ConfigError(f"--shard takes i/n with 0 <= i < n (e.g. 0/4), not {text!r}")
    return check_shard((int(match.group(1)), int(match.group(2))))


def check_shard(shard: Shard) -> Shard:
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard takes i/n with 0 <= i < n (e.g. 0/4), not {index}/{count}")
    return shard


def in_shard(case_id: str, shard: Shard) -> bool:
    """Whether the case belongs to the shard: the first 32 bits of sha256(case_id), modulo n."""
    index, count = shard
    return int(hashlib.sha256(case_id.encode()).hexdigest()[:8], 16) % count == index


def shard_label(shard: Shard) -> str:
    """The shard as the manifest's ``dataset.selection`` records it (``shard=1/4``)."""
    return f"shard={shard[0]}/{shard[1]}"


def selection_parts(selection: str | None) -> tuple[str | None, Shard | None]:
    """A manifest's ``dataset.selection`` split into what is not the shard, and the shard."""
    if not selection:
        return None, None
    match = _LABEL.search(selection)
    if match is None:
        return selection, None
    rest = "; ".join(p for p in selection.split("; ") if not p.startswith("shard=")) or None
    return rest, (int(match.group(1)), int(match.group(2)))
