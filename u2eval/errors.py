"""The small exception hierarchy: configuration problems stop a run before any model call; everything
that goes wrong with one case becomes data on that case instead."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class U2EvalError(Exception):
    """Base of u2eval's own errors."""


class ConfigError(U2EvalError):
    """A bad flag, file, preset or task definition. The CLI prints it as one line, without a traceback."""


class DataError(U2EvalError):
    """A row or file of the dataset that cannot be read. Carries the case id or file it concerns."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


class AdapterError(U2EvalError):
    """A model back-end failed. ``retryable`` tells the dispatcher whether trying again may help."""

    def __init__(self, message: str, *, kind: str, retryable: bool, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable
        self.retry_after_s = retry_after_s


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' for a near miss among ``choices``, else ''."""
    close = difflib.get_close_matches(name.lower(), [c.lower() for c in choices], n=1, cutoff=0.6)
    if not close:
        return ""
    original = next(c for c in choices if c.lower() == close[0])
    return f" (did you mean {original!r}?)"
