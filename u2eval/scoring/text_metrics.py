"""Text metrics as the official report scorer computes them: pycocoevalcap's BLEU and ROUGE-L, and sacreBLEU.

BLEU is a corpus metric: each case gives counts (:class:`BleuStats`), and the score comes from their sums
(:func:`bleu_from_sums`), which is what lets the bootstrap resample it. The arithmetic follows pycocoevalcap's
BleuScorer in the same operation order, so 4-decimal rounding lands on the same side (facts §6).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from sacrebleu.metrics.bleu import BLEU

BLEU_ORDER = 4
ROUGE_BETA = 1.2  # pycocoevalcap's Rouge weights recall 1.2x, not F1
_TINY = 1e-15  # pycocoevalcap BleuScorer constants: they only avoid 0/0, they are not smoothing
_SMALL = 1e-9


@dataclass(frozen=True)
class BleuStats:
    """One case's contribution to corpus BLEU: lengths and clipped n-gram counts per order."""

    test_len: int
    ref_len: int
    guess: tuple[int, ...]
    correct: tuple[int, ...]

    def row(self) -> list[int]:
        """The counts in the order :func:`bleu_from_sums` reads them."""
        return [self.test_len, self.ref_len, *self.guess, *self.correct]


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    counts: Counter[tuple[str, ...]] = Counter()
    for k in range(1, n + 1):
        counts.update(zip(*(tokens[i:] for i in range(k)), strict=False))
    return counts


def bleu_stats(hypothesis: str, references: Sequence[str], n: int = BLEU_ORDER) -> BleuStats:
    """Per-case statistics as pycocoevalcap's cook_refs / cook_test: str.split() tokens, counts clipped by
    the maximum count over references, and the 'closest' reference length (ties go to the shorter)."""
    hyp = hypothesis.split()
    refs = [r.split() for r in references]
    max_ref: dict[tuple[str, ...], int] = {}
    for ref in refs:
        for gram, count in _ngrams(ref, n).items():
            max_ref[gram] = max(max_ref.get(gram, 0), count)
    correct = [0] * n
    for gram, count in _ngrams(hyp, n).items():
        correct[len(gram) - 1] += min(max_ref.get(gram, 0), count)
    ref_len = min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
    guess = tuple(max(0, len(hyp) - k + 1) for k in range(1, n + 1))
    return BleuStats(len(hyp), ref_len, guess, tuple(correct))


def bleu_from_sums(sums: Sequence[float], n: int = BLEU_ORDER) -> float:
    """Corpus BLEU-n x 100 from summed counts [test_len, ref_len, guess 1..n, correct 1..n], as
    BleuScorer.compute_score(option='closest'). Plain floats on purpose: numpy's vectorised pow and exp may
    differ from libm in the last bit, and the point estimate must be the scorer's to the bit."""
    test_len, ref_len = float(sums[0]), float(sums[1])
    product = 1.0
    for k in range(n):
        product *= float(sums[2 + n + k] + _TINY) / (float(sums[2 + k]) + _SMALL)
    bleu: float = product ** (1.0 / n)
    ratio = (test_len + _TINY) / (ref_len + _SMALL)
    if ratio < 1:
        bleu *= math.exp(1 - 1 / ratio)
    return bleu * 100


def corpus_bleu(stats: Sequence[BleuStats], n: int = BLEU_ORDER) -> float:
    """Corpus BLEU-n x 100 of several cases' statistics (the integer sums are exact in any order)."""
    return bleu_from_sums([sum(column) for column in zip(*(s.row() for s in stats), strict=True)], n)


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence, bit-parallel (Hyyrö 2004): one big-int step per token of
    ``b`` instead of a len(a) x len(b) table, so long reports stay cheap. Same value as the DP table."""
    masks: dict[str, int] = {}
    for i, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for token in b:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def rouge_l_case(hypothesis: str, references: Sequence[str], beta: float = ROUGE_BETA) -> float:
    """pycocoevalcap Rouge.calc_score: tokens by split(' ') (so '' is one empty token), best precision and
    best recall over references, F-beta; 0 when either is 0."""
    cand = hypothesis.split(" ")
    precisions, recalls = [], []
    for reference in references:
        ref = reference.split(" ")
        lcs = _lcs_length(ref, cand)
        precisions.append(lcs / float(len(cand)))
        recalls.append(lcs / float(len(ref)))
    p, r = max(precisions), max(recalls)
    if p == 0 or r == 0:
        return 0.0
    return ((1 + beta**2) * p * r) / float(r + beta**2 * p)


def sacrebleu_corpus(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu's standard corpus BLEU (13a tokeniser, exp smoothing): comparable with other papers."""
    if not hypotheses:
        return math.nan
    return float(BLEU().corpus_score(list(hypotheses), [list(references)]).score)


def sacrebleu_signature() -> str:
    """The signature of ``sacrebleu_corpus`` (sacrebleu only knows nrefs after scoring something)."""
    bleu = BLEU()
    bleu.corpus_score(["a"], [["a"]])
    signature: object = bleu.get_signature()
    return str(signature)
