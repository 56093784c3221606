"""Statistics for comparing results: McNemar's test, Holm's correction, and the seeded stratified bootstrap.

The bootstrap works on *weights*, not on copied data: a resample of a stratum of n cases is the vector of
how many times each case was drawn (a multinomial count that sums to n). Every metric u2eval reports is a
ratio of sums of per-case statistics (BLEU's clipped n-gram counts and lengths included), so a resample's
metric is ``weights @ statistics``: one matrix product for all B resamples at once, with no Python loop
over resamples.

Reproducibility: the draws of a stratum depend only on (seed, the stratum's name, its size), never on
which other strata are present or in what order they come, so the same cases give the same intervals in
any run, and two runs over the same cases are resampled identically (which is what pairs them).

statsmodels is imported lazily: only the ablation report needs it, and it costs a second to import.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "CONFIDENCE",
    "DEFAULT_RESAMPLES",
    "DEFAULT_SEED",
    "EXACT_BELOW",
    "Interval",
    "McNemarResult",
    "holm",
    "mcnemar_test",
    "percentile_interval",
    "stratum_weights",
]

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
CONFIDENCE = 0.95
EXACT_BELOW = 25  # b + c below this: exact binomial test; otherwise chi-squared with continuity correction

FloatArray = NDArray[np.float64]


# ---------------------------------------------------------------------------------------------- McNemar


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test on the discordant pairs of a paired 2x2 table.

    ``b``: cases right under A and wrong under B; ``c``: wrong under A and right under B. ``statistic`` is
    the continuity-corrected chi-squared (|b - c| - 1)^2 / (b + c) for ``method == "chi2"``, and
    min(b, c) for ``method == "exact"`` (the binomial test's count), as statsmodels reports them.
    """

    b: int
    c: int
    statistic: float
    pvalue: float
    method: str  # "exact" or "chi2"


def mcnemar_test(b: int, c: int, exact: bool | None = None) -> McNemarResult:
    """McNemar's test via statsmodels: exact binomial when b + c < 25 (unless ``exact`` says otherwise),
    else chi-squared with continuity correction. b = c = 0 gives p = 1 (nothing to compare)."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    from statsmodels.stats.contingency_tables import mcnemar

    use_exact = (b + c < EXACT_BELOW) if exact is None else exact
    if b + c == 0:
        return McNemarResult(b, c, 0.0, 1.0, "exact" if use_exact else "chi2")
    # Only the off-diagonal cells enter the test; the concordant ones are set to 0.
    result = mcnemar(np.array([[0, b], [c, 0]]), exact=use_exact, correction=True)
    return McNemarResult(b, c, float(result.statistic), float(result.pvalue), "exact" if use_exact else "chi2")


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (statsmodels ``multipletests(method="holm")``), in input order.
    None entries (no test) stay None and are not part of the family."""
    from statsmodels.stats.multitest import multipletests

    tested = [(i, p) for i, p in enumerate(pvalues) if p is not None]
    adjusted: list[float | None] = [None] * len(pvalues)
    if not tested:
        return adjusted
    _, corrected, _, _ = multipletests([p for _, p in tested], method="holm")
    for (i, _), value in zip(tested, corrected, strict=True):
        adjusted[i] = float(value)
    return adjusted


# ---------------------------------------------------------------------------------------------- bootstrap


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap percentile interval; any part may be None (nothing to estimate)."""

    estimate: float | None
    low: float | None
    high: float | None

    def as_dict(self) -> dict[str, float | None]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


def _stratum_rng(seed: int, stratum: str) -> np.random.Generator:
    # A hash, not Python's hash(): the same stratum name gives the same stream in every process.
    key = int.from_bytes(hashlib.sha256(stratum.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, key])


def stratum_weights(stratum: str, n: int, resamples: int, seed: int) -> FloatArray:
    """(resamples x n) case counts of ``resamples`` bootstrap draws of n cases with replacement.

    Row r says how often each case (in the caller's fixed order, e.g. sorted by case id) was drawn in
    resample r; every row sums to n.
    """
    if n == 0:
        return np.zeros((resamples, 0), dtype=np.float64)
    picks = _stratum_rng(seed, stratum).integers(0, n, size=(resamples, n))
    flat = picks + (np.arange(resamples, dtype=np.int64) * n)[:, None]
    counts = np.bincount(flat.ravel(), minlength=resamples * n)
    return counts.reshape(resamples, n).astype(np.float64)


def percentile_interval(replicates: FloatArray, estimate: float | None, confidence: float = CONFIDENCE) -> Interval:
    """The percentile interval of the finite replicates (a resample with nothing to score gives NaN and is
    left out); no finite replicate gives no interval."""
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return Interval(estimate, None, None)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return Interval(estimate, float(low), float(high))
