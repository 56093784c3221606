"""A slow disk for the crash bench: with U2EVAL_BENCH_FSYNC_MS set, every os.fsync of the process takes that
many milliseconds longer, as on a network volume. Put on PYTHONPATH of the u2eval process under test only.

The crash bench needs it to tell a run that waits for each answer to be durable before asking the next from
one that does not: on a fast disk the two lose the same few answers to a kill."""

from __future__ import annotations

import os
import time

_DELAY_S = float(os.environ.get("U2EVAL_BENCH_FSYNC_MS", "0")) / 1000
if _DELAY_S > 0:
    _fsync = os.fsync

    def _slow_fsync(fd: int) -> None:
        _fsync(fd)
        time.sleep(_DELAY_S)

    os.fsync = _slow_fsync
