"""``u2eval judge-agreement``: two judges' readings of the same answers, compared with statistics, so a retired
judge can be replaced knowing what moved.

Extraction (the answers strict could not parse): Cohen's kappa over the two judges' readings (the option, the
sector, the number, or "no answer" / "unreadable" as categories of their own) on the answers both read, and
McNemar's test on the judged verdicts that flip between them (right under A and wrong under B: b; the reverse: c).
Reports and captions: Spearman's rank correlation of the per-case clinical scores, and the mean difference
B − A with its paired bootstrap interval (the same cases resampled for both). Then the cases where they disagree
most. Only answers both judges read are compared; the others are counted and named.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from u2eval.errors import ConfigError
from u2eval.records import DiskRecord, Judgement, Verdict
from u2eval.run.folder import RunFolder
from u2eval.run.scoring_pass import judge_answers
from u2eval.scoring.clinical import ClinicalResult
from u2eval.scoring.judge_records import JudgeIdentity, JudgeReading
from u2eval.scoring.judged import clinical_grade, clinically_graded, judge_kind, judged_verdicts, reading_of
from u2eval.stats import CONFIDENCE, DEFAULT_RESAMPLES, DEFAULT_SEED, mcnemar_test, percentile_interval, stratum_weights

MOST_DISAGREED = 10


@dataclass(frozen=True)
class JudgedRun:
    """A run as one judge read it."""

    folder: Path
    judge: JudgeIdentity
    judgements: dict[str, Judgement]
    readings: dict[str, JudgeReading]  # only readings of the answers as they stand now
    verdicts: dict[str, Verdict]  # case id -> judged verdict


def load_judged(folder: Path, judge: str | None) -> JudgedRun:
    """A run folder with one of its judges (None: the active one, i.e. the judged mode's)."""
    run = RunFolder(folder)
    manifest = run.require_manifest()
    identity = run.judge(judge) if judge is not None else run.active_judge()
    if identity is None:
        raise ConfigError(f"{folder}: no judge has read this run (u2eval judge {folder} --model ...)")
    answers = run.answers()
    judgements = judge_answers(answers, manifest.quirks)
    all_readings = run.judge_readings(identity.name)
    current = {j.case_id: r for j in judgements if (r := reading_of(j, all_readings)) is not None}
    return JudgedRun(
        folder=folder,
        judge=identity,
        judgements={j.case_id: j for j in judgements},
        readings=current,
        verdicts=judged_verdicts(answers, judgements, current),
    )


MAX_NAMED = 50  # case ids listed per reason a case was left out (the count is always whole)


class Disagreement(DiskRecord):
    case_id: str
    kind: str
    answer: str | None
    a: str  # judge A's reading or score
    b: str


class ExtractionAgreement(DiskRecord):
    n_compared: int  # answers both judges read (read, no answer or unreadable)
    n_left_out: int  # answers one of them has no reading for (its call failed, or it never read them)
    left_out: list[str] = []  # their case ids (the first MAX_NAMED)
    agreement: float | None  # share of identical readings
    kappa: float | None  # Cohen's kappa over the readings as categories (None: undefined, one category only)
    b: int  # right as A read it, wrong as B read it
    c: int  # wrong as A read it, right as B read it
    mcnemar_p: float | None
    mcnemar_method: str | None


class ClinicalAgreement(DiskRecord):
    n_compared: int  # reports and captions both judges graded
    n_left_out: int
    left_out: list[str] = []
    spearman: float | None  # rank correlation of the per-case scores
    mean_a: float | None
    mean_b: float | None
    mean_difference: float | None  # B − A
    low: float | None  # its paired bootstrap interval
    high: float | None


class AgreementReport(DiskRecord):
    schema_version: int = 1
    a: str  # "run folder: judge name (model)"
    b: str
    resamples: int
    seed: int
    confidence: float
    n_not_shared: int  # cases of A not compared: B lacks them, or holds another answer to them (two runs)
    not_shared: list[str]  # their case ids (the first MAX_NAMED)
    extraction: ExtractionAgreement
    clinical: ClinicalAgreement
    disagreements: list[Disagreement]


def _label(reading: JudgeReading) -> str:
    if reading.status == "read":
        return str(reading.value)
    return reading.status.replace("_", " ").upper()


def _kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    from statsmodels.stats.inter_rater import cohens_kappa

    categories = sorted(set(a) | set(b))
    if len(categories) < 2:
        return None  # every reading one category: chance agreement is 1, kappa is undefined
    index = {c: i for i, c in enumerate(categories)}
    table = np.zeros((len(categories), len(categories)))
    for x, y in zip(a, b, strict=True):
        table[index[x], index[y]] += 1
    kappa = float(cohens_kappa(table).kappa)
    return kappa if math.isfinite(kappa) else None


def _extraction(ra: JudgedRun, rb: JudgedRun, shared: list[str]) -> tuple[ExtractionAgreement, list[Disagreement]]:
    wanted = [c for c in shared if judge_kind(ra.judgements[c]) == "extraction"]
    both = [c for c in wanted if _final(ra.readings.get(c)) and _final(rb.readings.get(c))]
    labels_a = [_label(ra.readings[c]) for c in both]
    labels_b = [_label(rb.readings[c]) for c in both]
    b = sum(1 for c in both if ra.verdicts[c].correct and not rb.verdicts[c].correct)
    c_ = sum(1 for c in both if not ra.verdicts[c].correct and rb.verdicts[c].correct)
    test = mcnemar_test(b, c_) if both else None
    # Most disagreed first: readings that flip the verdict, then readings that differ with the same verdict.
    flips = {c for c in both if bool(ra.verdicts[c].correct) != bool(rb.verdicts[c].correct)}
    differ = sorted(
        (
            Disagreement(case_id=c, kind="extraction", answer=ra.judgements[c].answer, a=x, b=y)
            for c, x, y in zip(both, labels_a, labels_b, strict=True)
            if x != y
        ),
        key=lambda d: (d.case_id not in flips, d.case_id),
    )
    compared = set(both)
    left_out = [c for c in wanted if c not in compared]
    same = sum(x == y for x, y in zip(labels_a, labels_b, strict=True))
    return (
        ExtractionAgreement(
            n_compared=len(both),
            n_left_out=len(left_out),
            left_out=left_out[:MAX_NAMED],
            agreement=same / len(both) if both else None,
            kappa=_kappa(labels_a, labels_b) if both else None,
            b=b,
            c=c_,
            mcnemar_p=test.pvalue if test else None,
            mcnemar_method=test.method if test else None,
        ),
        differ,
    )


def _final(reading: JudgeReading | None) -> bool:
    return reading is not None and reading.status != "failed"


def _score(run: JudgedRun, case_id: str) -> float | None:
    """The case's clinical score as the run's summary counts it (``clinical_grade``), None when it has none."""
    graded = clinical_grade(run.judgements[case_id], run.readings.get(case_id))
    return graded.score if isinstance(graded, ClinicalResult) else None


def _clinical(
    ra: JudgedRun, rb: JudgedRun, shared: list[str], resamples: int, seed: int
) -> tuple[ClinicalAgreement, list[Disagreement]]:
    from scipy.stats import spearmanr

    wanted = [c for c in shared if clinically_graded(ra.judgements[c])]
    pairs = [(c, sa, sb) for c in wanted if (sa := _score(ra, c)) is not None and (sb := _score(rb, c)) is not None]
    graded = {p[0] for p in pairs}
    left_out = [c for c in wanted if c not in graded]
    if not pairs:
        empty = ClinicalAgreement(
            n_compared=0, n_left_out=len(left_out), left_out=left_out[:MAX_NAMED], spearman=None, mean_a=None,
            mean_b=None, mean_difference=None, low=None, high=None,
        )  # fmt: skip
        return empty, []
    a = np.array([p[1] for p in pairs])
    b = np.array([p[2] for p in pairs])
    rho = float(spearmanr(a, b).statistic) if len(pairs) > 2 and a.std() > 0 and b.std() > 0 else None
    weights = stratum_weights("judge-agreement/clinical", len(pairs), resamples, seed)
    replicates = weights @ (b - a) / len(pairs)
    interval = percentile_interval(replicates, float((b - a).mean()), CONFIDENCE)
    ranked = sorted(pairs, key=lambda p: (-abs(p[2] - p[1]), p[0]))
    differ = [
        Disagreement(case_id=c, kind="clinical", answer=ra.judgements[c].answer, a=f"{sa:.3f}", b=f"{sb:.3f}")
        for c, sa, sb in ranked
        if sa != sb
    ]
    return (
        ClinicalAgreement(
            n_compared=len(pairs),
            n_left_out=len(left_out),
            left_out=left_out[:MAX_NAMED],
            spearman=rho,
            mean_a=float(a.mean()),
            mean_b=float(b.mean()),
            mean_difference=interval.estimate,
            low=interval.low,
            high=interval.high,
        ),
        differ,
    )


def compare_judges(
    ra: JudgedRun, rb: JudgedRun, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED
) -> AgreementReport:
    """Two judges' readings of the same answers: cases joined by id, and compared only where both runs hold the
    same answer (two runs of different models' answers are not two readings of one answer)."""
    shared = sorted(c for c, j in ra.judgements.items() if c in rb.judgements and rb.judgements[c].answer == j.answer)
    not_shared = sorted(set(ra.judgements) - set(shared))
    if not shared:
        raise ValueError(f"{ra.folder} and {rb.folder} share no case with the same stored answer")
    extraction, differ_x = _extraction(ra, rb, shared)
    clinical, differ_c = _clinical(ra, rb, shared, resamples, seed)
    return AgreementReport(
        a=f"{ra.folder}: {ra.judge.name} ({ra.judge.adapter}/{ra.judge.model})",
        b=f"{rb.folder}: {rb.judge.name} ({rb.judge.adapter}/{rb.judge.model})",
        resamples=resamples,
        seed=seed,
        confidence=CONFIDENCE,
        n_not_shared=len(not_shared),
        not_shared=not_shared[:MAX_NAMED],
        extraction=extraction,
        clinical=clinical,
        disagreements=differ_x[:MOST_DISAGREED] + differ_c[:MOST_DISAGREED],
    )


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _not_shared_line(report: AgreementReport) -> list[str]:
    if not report.n_not_shared:
        return []
    examples = ", ".join(report.not_shared[:5])
    return [
        f"- {report.n_not_shared} case(s) of A not compared (B lacks them or holds another answer), e.g. {examples}"
    ]


def render_agreement(report: AgreementReport) -> str:
    """The report as Markdown (agreement.md, and the terminal)."""
    x, c = report.extraction, report.clinical
    lines = [
        "# Judge agreement",
        "",
        f"- A: {report.a}",
        f"- B: {report.b}",
        *_not_shared_line(report),
        "",
        "## Answer extraction (answers strict could not parse)",
        "",
        f"Compared: {x.n_compared} answers both judges read ({x.n_left_out} left out: a judge has no reading"
        + (f", e.g. {', '.join(x.left_out[:5])}" if x.left_out else "")
        + ").",
        "",
        "| same reading | Cohen's kappa | right under A only (b) | right under B only (c) | McNemar p |",
        "|---|---|---|---|---|",
        f"| {_fmt(x.agreement)} | {_fmt(x.kappa) if x.kappa is not None else '– (undefined)'} | {x.b} | {x.c} | "
        f"{_fmt(x.mcnemar_p, 4)}{f' ({x.mcnemar_method})' if x.mcnemar_method else ''} |",
        "",
        "## Reports and captions (clinical score, per case)",
        "",
        f"Compared: {c.n_compared} cases both judges graded ({c.n_left_out} left out"
        + (f", e.g. {', '.join(c.left_out[:5])}" if c.left_out else "")
        + ").",
        "",
        f"| Spearman rho | mean A | mean B | B − A [{report.confidence:.0%} paired bootstrap, {report.resamples}, "
        f"seed {report.seed}] |",
        "|---|---|---|---|",
        f"| {_fmt(c.spearman)} | {_fmt(c.mean_a)} | {_fmt(c.mean_b)} | {_fmt(c.mean_difference)} "
        f"[{_fmt(c.low)}, {_fmt(c.high)}] |",
    ]
    if report.disagreements:
        lines += ["", "## Where they disagree most", "", "| case | kind | A | B | answer |", "|---|---|---|---|---|"]
        for d in report.disagreements:
            answer = " ".join((d.answer or "").split())[:80].replace("|", "\\|")
            lines.append(f"| `{d.case_id}` | {d.kind} | {d.a} | {d.b} | {answer} |")
    return "\n".join(lines) + "\n"
