"""Why strict and reference differ on a dataset, precisely: each quirk switch involved and how many cases it
changed, and which dataset-level rules of the official scorer move a metric.

For every case the modes judge differently, the judge has already named the reference quirks that change
its reference verdict (``Verdict.changed_by``: each switch turned off alone). A case on which the modes
disagree with no quirk behind it differs because the two modes read the answer (or the truth cell)
differently - strict's parsers against the official matcher - and is counted under that name. Dataset-level
rules (rounding to 4 decimals, macro-F1 over predicted strings) are found by scoring the dataset again with
each one off.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from u2eval.benchmark.tasks import TaskSpec
from u2eval.records import Judgement, Verdict

ANSWER_READING = "answer reading (strict's parser vs the official matcher)"
TRUTH_READING = "truth reading (strict reads cells as Python literals and checks them)"
KIT_FAILURES = "kit failure messages (infra errors in strict, scored as answers by the official scorer)"
ROW_ORDER = "row_order_join (rows strict has no record for, paired with one by row order)"
DATASET_QUIRKS = ("round_4dp", "f1_over_union", "empty_classification_scores_zero", "nan_reference_zeroes_text_metrics")

_SAME = 1e-12


def _plural(n: int) -> str:
    return f"{n} case{'s' if n != 1 else ''}"


def _outcome(v: Verdict, capability: str) -> tuple[object, ...]:
    if not v.counted:
        return (False,)
    if capability in ("classification", "detection"):
        return (True, v.correct)
    return (True, v.prediction, v.truth)


def modes_disagree(strict: Verdict, reference: Verdict, capability: str) -> bool:
    """Whether the modes judge a case differently where a score can see it: counted or not, right or wrong (a
    number or text: the value scored)."""
    return _outcome(strict, capability) != _outcome(reference, capability)


def case_reasons(judgements: Sequence[Judgement], task: TaskSpec) -> list[str]:
    """'quirk: N cases' for every reference quirk that changes a verdict of the dataset, then the cases on which
    the modes disagree with no quirk behind them, by what they read differently."""
    quirks: Counter[str] = Counter()
    reading: Counter[str] = Counter()
    for j in judgements:
        s, r = j.strict, j.reference
        if j.outcome == "infra_error":
            if r.from_official_file and r.counted:  # strict has no answer; the official scored a record
                reading[KIT_FAILURES if j.error == "recorded_failure" else ROW_ORDER] += 1
            continue
        quirks.update(r.changed_by)
        if not r.changed_by and modes_disagree(s, r, task.capability):
            truth = (s.not_counted or "").startswith("truth_") or (r.not_counted or "").startswith("truth_")
            reading[TRUTH_READING if truth or s.truth != r.truth else ANSWER_READING] += 1
    return [f"{name}: {_plural(n)}" for name, n in sorted(quirks.items())] + [
        f"{name}: {_plural(n)}" for name, n in sorted(reading.items())
    ]


def dataset_reasons(
    metrics: Mapping[str, float | None], rescore: Callable[[str], Mapping[str, float | None]], quirks_on: Sequence[str]
) -> list[str]:
    """'quirk: metric, ...' for each dataset-level rule that, turned off alone, moves a reference metric."""
    reasons = []
    for quirk in DATASET_QUIRKS:
        if quirk not in quirks_on:
            continue
        other = rescore(quirk)
        moved = sorted(name for name, value in metrics.items() if _differs(value, other.get(name)))
        if moved:
            reasons.append(f"{quirk}: moves {', '.join(moved)}")
    return reasons


def _differs(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return (a is None) != (b is None)
    return abs(a - b) > _SAME
