"""The scoring pass over a run folder: judge every stored answer, summarise, write the scores, and score the
answers' regions when the run asks for it (``u2eval.grounded.scorer``, once, over the judgements). It is the
only way a summary is made, for ``u2eval run``, ``u2eval score`` and ``u2eval merge`` alike, which is why
re-scoring reproduces a run's summary byte for byte. What a run folder holds: ``u2eval.run.folder``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from u2eval.benchmark.tasks import get_task, select_tasks, task_keys, task_sha256
from u2eval.grounded.report import render_grounded_markdown
from u2eval.grounded.scorer import GroundedOptions, score_grounded
from u2eval.provenance import version
from u2eval.records import CaseMeta, Completion, Judgement
from u2eval.run.costs import RunCosting, recorded_costing, run_cost
from u2eval.run.folder import RunFolder
from u2eval.run.records import ControlRecord, Manifest
from u2eval.run.store import ResponseStore
from u2eval.scoring.aggregate import Summary, summarise
from u2eval.scoring.judged import JudgedScores, clinical_summary, judged_verdicts, summarise_judge
from u2eval.scoring.judging import judge
from u2eval.scoring.summary import subset_reasons
from u2eval.scoring.summary_report import write_summary
from u2eval.scoring.switches import Switches, reading_quirks

log = logging.getLogger(__name__)


def judge_answers(answers: Sequence[tuple[CaseMeta, Completion]], switches: Switches | None = None) -> list[Judgement]:
    """Each case's answer judged in both modes (the reference with the quirks ``switches`` set); a case with
    no stored answer is an infra error."""
    quirks = reading_quirks(switches or {})
    return [judge(meta, completion, get_task(meta.task), quirks) for meta, completion in answers]


def judge_folder(folder: Path) -> list[Judgement]:
    """Judge every case of a run from what is stored, with the quirk switches its manifest records."""
    run = RunFolder(folder)
    manifest = run.manifest()
    return judge_answers(run.answers(), manifest.quirks if manifest else {})


def score_folder(
    folder: Path,
    data_errors: list[str] | None = None,
    grounded: GroundedOptions | None = None,
    subset: list[str] | None = None,
    store: ResponseStore | None = None,
    switches: Switches | None = None,
    control: ControlRecord | None = None,
    costing: RunCosting | None = None,
) -> tuple[Summary, list[Judgement]]:
    """(Re-)score a run from its stored answers, without any model call, and rewrite its scores.

    ``data_errors``: the rows the run could not read, listed in summary.md (default: the manifest's).
    ``grounded``: whether and how to score the answers' regions too (default: as the manifest records); that
    writes grounded.json and a section of summary.md, and leaves summary.json as it is.
    ``subset``: why the run holds only part of its tasks' cases (default: from the manifest's limit and
    selection). ``store``: the response store a run holds open (default: the folder's, read afresh).
    ``switches``: reference quirks set by hand (default: as the manifest records). ``control``: what a control
    run sent in each case's image's place (default: as the manifest records), said in summary.md. ``costing``:
    the model's prices and image rule (default: as the manifest records; none: no cost is reckoned)."""
    run = RunFolder(folder)
    manifest = run.manifest()
    if switches is None:
        switches = manifest.quirks if manifest else {}
    store = store if store is not None else ResponseStore(folder, repair=False)  # read once: answers and cost
    answers = run.answers(store)
    judgements = judge_answers(answers, switches)
    task_keys = {j.task for j in judgements}
    tasks = tuple(t for t in select_tasks(None) if t.key in task_keys)
    scored_with = {"u2eval": version()} | {f"task:{t.key}": task_sha256(t.key) for t in tasks}
    if subset is None:
        limit, selection = (manifest.limit, manifest.dataset.get("selection")) if manifest else (None, None)
        subset = subset_reasons(limit, selection)
    if data_errors is None:
        data_errors = list(manifest.data_errors) if manifest else []
    judged = judged_scores(run, answers, judgements)
    summary = summarise(
        judgements, tasks, subset=subset, unreadable_rows=len(data_errors), switches=switches, judged=judged
    )
    summary = summary.model_copy(update={"scored_with": scored_with})
    costing = costing or recorded_costing(manifest)
    if costing is not None:
        summary = summary.model_copy(update={"cost": run_cost(run, costing, store)})
    _warn_if_definitions_changed(folder, manifest, scored_with)
    run.write_judgements(judgements)
    run.write_summary(summary)
    grounded = grounded if grounded is not None else run.grounded_options()
    control = control or (manifest.control if manifest else None)
    sections: tuple[str, ...] = (_control_section(control),) if control is not None else ()
    if grounded.enabled:
        sections += (_grounded_section(run, answers, judgements, summary, grounded),)
    else:
        run.forget_grounded()
    write_summary(folder, summary, data_errors, sections)
    return summary, judgements


def _control_section(control: ControlRecord) -> str:
    """What a control run's summary.md says: its scores are not the model's on the benchmark's images."""
    text = (
        f"## Control run: {control.name}\n\nEach case was sent {control.sends} in place of its own image, and is "
        "scored against its own truth: these scores say how much of the model's score survives without the "
        "right image (docs/ablation.md), not how it does on the benchmark.\n"
    )
    if control.not_controlled:
        text += f"\n{len(control.not_controlled)} case(s) were sent their own image: their dataset has no other.\n"
    return text


def judged_scores(
    run: RunFolder, answers: Sequence[tuple[CaseMeta, Completion]], judgements: Sequence[Judgement]
) -> JudgedScores | None:
    """The judged mode and the clinical score, from the readings of the folder's active judge (none: no judge)."""
    identity = run.active_judge()
    if identity is None:
        return None
    readings = run.judge_readings(identity.name)
    verdicts = judged_verdicts(answers, judgements, readings)
    return JudgedScores(
        verdicts=verdicts,
        judge=summarise_judge(identity, judgements, readings, verdicts),
        clinical=clinical_summary(identity, judgements, readings, task_keys()),
    )


def _grounded_section(
    run: RunFolder,
    answers: Sequence[tuple[CaseMeta, Completion]],
    judgements: Sequence[Judgement],
    summary: Summary,
    grounded: GroundedOptions,
) -> str:
    """Grounded scoring and its summary.md section. A bad answer is ungroundable case by case; should the
    grounded scoring fail as a whole (an unreadable truth cache, a bug), the run keeps its U2-Score, its
    summary and its manifest: the failure is logged and said in summary.md, and no grounded.json is left."""
    try:
        return render_grounded_markdown(score_grounded(run.path, answers, judgements, summary, grounded))
    except Exception as exc:  # noqa: BLE001 - never lose a run's scores to its grounded part
        log.error("%s: grounded scoring failed (%s: %s); the U2-Score is unaffected", run.path, type(exc).__name__, exc)
        run.forget_grounded()
        return f"## Grounded answers\n\nGrounded scoring failed ({type(exc).__name__}: {exc}).\n"


def _warn_if_definitions_changed(folder: Path, manifest: Manifest | None, scored_with: dict[str, str]) -> None:
    if manifest is None:
        return
    changed = sorted(k for k, sha in manifest.tasks.items() if scored_with.get(f"task:{k}", sha) != sha)
    if changed:
        log.warning("%s: task definitions changed since the run (%s); scores use the current ones", folder, changed)
