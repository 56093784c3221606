"""What every adapter states about itself: who answers (``info``, part of every request key) and how many
requests it takes at once (``max_batch_size``), both fixed when the adapter is made.

Not an adapter (no ``create``), so it has no line in the ADAPTERS table.
"""

from __future__ import annotations

from u2eval.records import ModelInfo


class Identified:
    def __init__(self, info: ModelInfo, max_batch_size: int) -> None:
        self._info = info
        self._max_batch_size = max_batch_size

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def max_batch_size(self) -> int:
        return self._max_batch_size
