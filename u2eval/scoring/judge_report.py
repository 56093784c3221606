"""What a judge adds to summary.md and the terminal: the judged mode's judge and what it read, and the clinical
report score beside BLEU-4 and ROUGE-L. Pure renderings of ``summary.json``'s ``judge`` and ``clinical``."""

from __future__ import annotations

from u2eval.scoring.clinical import ClinicalSummary, Estimate
from u2eval.scoring.judge_records import JudgeIdentity
from u2eval.scoring.judged import JudgeSummary
from u2eval.scoring.summary import Summary

MAX_LISTED = 50
_STATUS_WORDS = {
    "read": "read",
    "no_answer": "no answer found",
    "unreadable": "judge's reply unreadable",
    "failed": "judge call failed",
    "missing": "not yet sent",
}


def _fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def judge_label(identity: JudgeIdentity) -> str:
    """'openai/gpt-4o-mini-2024-07-18 (retires 2027-01)': who judged, as a reader needs to know it."""
    label = f"{identity.adapter}/{identity.model}"
    if identity.revision:
        label += f" @ {identity.revision}"
    return label + (f" (retires {identity.retires})" if identity.retires else "")


def estimate_text(estimate: Estimate) -> str:
    if estimate.estimate is None:
        return "–"
    if estimate.low is None or estimate.high is None:
        return _fmt(estimate.estimate, 3)
    return f"{estimate.estimate:.3f} [{estimate.low:.3f}, {estimate.high:.3f}]"


def _outcome_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {_STATUS_WORDS[s]}" for s, n in counts.items()) or "none"


def judge_section(summary: Summary) -> list[str]:
    """summary.md's section on the judge behind the judged mode; [] for a run no judge has read."""
    judge = summary.judge
    if judge is None:
        return []
    identity = judge.identity
    extraction = judge.outcomes.get("extraction", {})
    lines = [
        "",
        f"## Judged mode (judge `{identity.name}`)",
        "",
        f"Judge: {judge_label(identity)}; generation {identity.generation.model_dump(mode='json')}; prompt "
        "templates " + ", ".join(f"{k} `{v[:12]}`" for k, v in sorted(identity.templates.items())) + ".",
        "",
        f"The judged mode is strict plus the judge's readings of the {sum(extraction.values())} answers strict could "
        f"not parse ({_outcome_text(extraction)}); {judge.rescued} of them are right as the judge read them. "
        "Strict and reference are never changed by a judge.",
    ]
    if judge.by_task:
        judged = summary.modes.get("judged")
        strict = summary.modes["strict"]
        lines += ["", "| task | sent to the judge | read | no answer | other | strict score | judged score |"]
        lines.append("|---|---|---|---|---|---|---|")
        for task, counts in judge.by_task.items():
            other = sum(n for s, n in counts.items() if s not in ("read", "no_answer"))
            s_task, j_task = strict.tasks.get(task), judged.tasks.get(task) if judged else None
            lines.append(
                f"| {task.upper()} | {sum(counts.values())} | {counts.get('read', 0)} | {counts.get('no_answer', 0)} | "
                f"{other} | {_fmt(s_task.score if s_task else None)} | {_fmt(j_task.score if j_task else None)} |"
            )
    lines += _not_judged_lines(judge)
    return lines


def _not_judged_lines(judge: JudgeSummary) -> list[str]:
    if not judge.not_judged:
        return []
    lines = [
        "",
        f"**Judged mode partial**: {len(judge.not_judged)} answer(s) strict could not parse have no reading from "
        "this judge (its call failed, it was not asked (`--only clinical`), or the answer changed after it read the "
        "run): run `u2eval judge` again to read them.",
        "",
    ]
    lines += [f"- `{case_id}`" for case_id in judge.not_judged[:MAX_LISTED]]
    if len(judge.not_judged) > MAX_LISTED:
        lines.append(f"- ... and {len(judge.not_judged) - MAX_LISTED} more")
    return lines


def clinical_section(summary: Summary) -> list[str]:
    """summary.md's clinical score table, beside BLEU-4 and ROUGE-L; [] without one."""
    clinical = summary.clinical
    if clinical is None:
        return []
    strict = {(d.task, d.dataset_id): d for d in summary.modes["strict"].datasets}
    lines = [
        "",
        f"## Clinical report score (judge `{clinical.judge}`; never part of the U2-Score)",
        "",
        f"Per case: matched findings / (matched + clinically significant errors + minor errors / 4), in [0, 1] "
        f"(docs/judges.md). Intervals: {clinical.confidence:.0%} percentile bootstrap, {clinical.resamples} "
        f"resamples, seed {clinical.seed}. BLEU-4 and ROUGE-L are strict mode's, on a 0–100 scale.",
        "",
        "| task | dataset | cases scored | not scored | clinical score [95% CI] | significant errors | minor errors "
        "| BLEU-4 (0–100) | ROUGE-L (0–100) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for d in clinical.datasets:
        metrics = strict[(d.task, d.dataset_id)].metrics if (d.task, d.dataset_id) in strict else {}
        lines.append(
            f"| {d.task.upper()} | {d.dataset_id} | {d.n_scored} | {d.n_not_scored} | {estimate_text(d.score)} | "
            f"{d.significant} | {d.minor} | {_fmt(metrics.get('bleu4'), 2)} | {_fmt(metrics.get('rouge_l'), 2)} |"
        )
    for task, result in clinical.tasks.items():
        strict_task = summary.modes["strict"].tasks.get(task)
        bleu = strict_task.metrics.get("bleu4") if strict_task else None
        rouge = strict_task.metrics.get("rouge_l") if strict_task else None
        lines.append(
            f"| **{task.upper()}** | mean of {len(result.datasets)} | | | {estimate_text(result.score)} | | | "
            f"{_fmt(bleu, 2)} | {_fmt(rouge, 2)} |"
        )
    lines += _not_scored_lines(clinical)
    return lines


def _not_scored_lines(clinical: ClinicalSummary) -> list[str]:
    if not clinical.not_scored:
        return []
    lines = ["", f"Not scored clinically ({len(clinical.not_scored)}):", ""]
    lines += [f"- `{case_id}`: {why}" for case_id, why in list(clinical.not_scored.items())[:MAX_LISTED]]
    if len(clinical.not_scored) > MAX_LISTED:
        lines.append(f"- ... and {len(clinical.not_scored) - MAX_LISTED} more")
    return lines


def terminal_lines(summary: Summary) -> list[str]:
    """What the end of a run or a re-score prints about the judge (plain text; the caller escapes it)."""
    lines = []
    if summary.judge is not None:
        judge = summary.judge
        lines.append(
            f"judge {judge_label(judge.identity)}: {_outcome_text(judge.outcomes.get('extraction', {}))} "
            f"of the answers strict could not parse; {judge.rescued} rescued"
        )
        if judge.not_judged:
            lines.append(f"judged mode partial: {len(judge.not_judged)} answer(s) not yet read by the judge")
    if summary.clinical is not None:
        for task, result in summary.clinical.tasks.items():
            lines.append(f"clinical score {task.upper()}: {estimate_text(result.score)} (never in the U2-Score)")
        if summary.clinical.not_scored:
            lines.append(f"clinical score: {len(summary.clinical.not_scored)} case(s) not scored (summary.md)")
    return lines
