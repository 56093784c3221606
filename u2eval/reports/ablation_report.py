"""The ablation report as files: ``ablation.md``, ``ablation.json`` and (with matplotlib) ``ablation.png``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from u2eval.reports.ablation import AblationReport, Comparison, ControlSurvival, TaskComparison
from u2eval.reports.controls import U2_ROW
from u2eval.reports.leaderboard_text import fmt
from u2eval.stats import EXACT_BELOW

__all__ = ["render_markdown", "write_report"]

log = logging.getLogger(__name__)


def _p(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2e}" if value < 1e-3 else f"{value:.4f}"


def _diff(row: TaskComparison) -> str:
    if row.difference is None:
        return "–"
    interval = "" if row.low is None or row.high is None else f" [{row.low:+.3f}, {row.high:+.3f}]"
    return f"{row.difference:+.3f}{interval}"


def _binary_line(row: TaskComparison, label: str) -> str:
    test = {"exact": "exact binomial", "chi2": "χ² (cc)"}.get(row.test or "", "–")
    return (
        f"| {label} | {row.n} | {fmt(row.value_a, 3)} | {fmt(row.value_b, 3)} | {row.b} | {row.c} | {test} | "
        f"{fmt(row.statistic, 2)} | {_p(row.p)} | {_p(row.p_holm)} | {_diff(row)} |"
    )


def _comparison(comparison: Comparison) -> list[str]:
    a, b = comparison.a, comparison.b
    lines = [
        f"## {b} vs {a}",
        "",
        f"A = {a} (`{comparison.run_a}`), B = {b} (`{comparison.run_b}`); {comparison.n_common} cases in common; "
        "Δ = B − A.",
        "",
    ]
    binary = [r for r in comparison.tasks if r.kind == "binary"]
    if binary:
        lines += [
            "b = right under A and wrong under B; c = wrong under A and right under B.",
            "",
            "| task | n | accuracy A | accuracy B | b | c | McNemar | statistic | p | p (Holm) | Δ [95% CI] |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        lines += [_binary_line(r, r.task.upper()) for r in binary]
        if comparison.pooled is not None:
            names = ", ".join(r.task.upper() for r in binary)
            lines.append(_binary_line(comparison.pooled, f"**pooled** ({names})"))
        lines += [
            "",
            f"The cases behind b and c, each beside the other run's answer: `u2eval view {comparison.run_a} "
            f"{comparison.run_b}`.",
        ]
    continuous = [r for r in comparison.tasks if r.kind == "continuous"]
    if continuous:
        lines += [
            "",
            "Tasks without a binary correctness: the paired difference of the task score (U2 scale) only.",
            "",
            "| task | metric | n | A | B | Δ [95% CI] |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r.task.upper()} | {r.metric} | {r.n} | {fmt(r.value_a, 3)} | {fmt(r.value_b, 3)} | {_diff(r)} |"
            for r in continuous
        ]
    return [*lines, ""]


def _control(control: ControlSurvival, comparisons: list[Comparison]) -> list[str]:
    """One control beside its baseline: each task's score under both, the share kept, and the paired test."""
    paired = next((c for c in comparisons if c.run_b == control.run_control), None)
    rows = {r.task: r for r in paired.tasks} if paired is not None else {}
    name, base = control.control, control.baseline
    lines = [f"### {name}: {control.sends}", "", f"Run folder `{control.run_control}`."]
    if control.not_controlled:
        lines[-1] += (
            f" **{len(control.not_controlled)} case(s) not controlled**: their dataset has no other image, so they "
            "were sent their own (listed in the run's manifest.json, `control.not_controlled`)."
        )
    lines += [
        "",
        f"| task | task score | {base} | {name} | survival ({name} / {base}) | p (Holm) "
        f"| Δ = {name} − {base} [95% CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in control.tasks:
        test = rows.get(row.task)
        label = "**U2**" if row.task == U2_ROW else row.task.upper()
        survived = "–" if row.survival is None else f"{row.survival:.2f}"
        p = _p(test.p_holm) if test is not None else "–"
        diff = _diff(test) if test is not None else "–"
        lines.append(
            f"| {label} | {row.metric} | {fmt(row.baseline, 3)} | {fmt(row.control, 3)} | {survived} | {p} | {diff} |"
        )
    return [*lines, ""]


def _controls(report: AblationReport) -> list[str]:
    if not report.controls:
        return []
    lines = [
        "## Controls: how much of the score survives without the right image",
        "",
        "Each control asks the baseline's prompt with something else in the case's image's place; every answer is "
        "still scored against the case's own truth. **Survival** = the control's task score / the baseline's (the "
        f"two runs' summaries, {report.mode} mode, the U2 scale): 1.00 = the whole score is kept without the case's "
        "image, 0.00 = none of it. A guess keeps some score with no image at all, so survival is a ratio, not a "
        "test: p (Holm) is McNemar's test of the paired cases (binary tasks), Δ the paired difference with its "
        "bootstrap interval (accuracy on the paired cases; the task score for CVE, RG and CG, which have no test).",
        "",
    ]
    for control in report.controls:
        lines += _control(control, report.comparisons)
    return lines


def _count(value: int | None) -> str:
    return "–" if value is None else str(value)


def _listed(value: str | int | list[str] | None) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def render_markdown(report: AblationReport) -> str:
    design = report.design
    prompts, controls = _listed(design.get("variants")), _listed(design.get("controls"))
    variants = prompts + controls or [report.comparisons[0].a, report.comparisons[0].b]
    kind = "Paired comparison"
    if prompts:
        kind = "Prompt ablation" if len(prompts) > 1 else "Controls"
        kind += " and controls" if len(prompts) > 1 and controls else ""
    lines = [f"# {kind}: {' vs '.join(variants)}", ""]
    facts = [f"model `{report.model}`" if report.model else "two runs", f"{report.mode} scoring"]
    if design.get("data"):
        facts.append(f"data {design['data']}")
    if _listed(design.get("anatomy")):
        facts.append(f"anatomy {', '.join(_listed(design.get('anatomy')))}")
    if design.get("limit"):
        facts.append(f"limit {design['limit']} per dataset")
    lines += [
        "; ".join(facts) + ".",
        "",
        f"McNemar's test: exact binomial when b + c < {EXACT_BELOW}, otherwise χ² with continuity correction "
        "(statsmodels). Holm adjusts every per-task p-value of this report as one family. Intervals: "
        f"{report.confidence:.0%} paired bootstrap (B = {report.resamples}, seed {report.seed}, cases resampled "
        "within each source dataset, the same draws for both sides). Paired cases: answered and counted by both "
        "runs; infra errors are excluded.",
        "",
        "| variant | run folder | cases | asked | shared / reused | infra errors |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.variant} | `{r.folder}` | {r.n_cases} | {_count(r.asked)} | {_count(r.shared)} | {r.infra_errors} |"
        for r in report.runs
    ]
    lines.append("")
    lines += _controls(report)
    for comparison in report.comparisons:
        lines += _comparison(comparison)
    return "\n".join(lines)


def write_report(report: AblationReport, out: Path, plots: bool = True) -> list[Path]:
    """Write the report's files into ``out``; the PNG is skipped (with a warning) without matplotlib."""
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "ablation.md", out / "ablation.json"
    md.write_text(render_markdown(report), encoding="utf-8")
    data = report.model_dump(mode="json", exclude={"controls"} if not report.controls else None)
    js.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    written = [md, js]
    if plots:
        from u2eval.reports.plots import PlotsUnavailable, plot_ablation

        try:
            written.append(plot_ablation(report, out / "ablation.png"))
        except PlotsUnavailable as exc:
            log.warning("%s", exc)
    return written
