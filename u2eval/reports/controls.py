"""How much of a model's score survives without the right image: a control run's task scores (``u2eval.data.
controls``: a grey image, no image, another case's image) beside its baseline's, from both runs' summaries.

Survival = the control's task score / the baseline's, in the report's scoring mode, each task score as the run's
summary has it (the U2 scale: accuracy, 1 − RMSE, BLEU-4 / 100; the mean over the task's datasets). 1 means the
model scores as well without the case's own image; 0 that nothing of its score is left. It is a ratio of two
scores, not a test: a chance-level guess keeps some score without any image, and the paired tests of the same
two runs (McNemar per binary task, the paired bootstrap) say whether the loss is more than chance.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from u2eval.records import ScoringMode
from u2eval.reports.rundata import LoadedRun
from u2eval.scoring.metrics import score_label

__all__ = ["U2_ROW", "ControlSurvival", "SurvivalRow", "survival"]

U2_ROW = "u2"  # the row of the U2-Score over the tasks both runs scored


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SurvivalRow(_Frozen):
    task: str  # a task key, or U2_ROW
    metric: str  # what the task score is: accuracy, 1 − RMSE, BLEU-4 / 100, or U2-Score
    baseline: float | None  # the baseline's task score
    control: float | None  # the control's task score
    survival: float | None  # control / baseline; None where the baseline scored 0 or has no score


class ControlSurvival(_Frozen):
    control: str  # no-image | text-only | other-image
    baseline: str  # the baseline's variant (or its label)
    run_baseline: str
    run_control: str
    sends: str  # what each case was sent in place of its image
    not_controlled: list[str]  # case ids sent their own image anyway (their dataset has no other image)
    tasks: list[SurvivalRow]


def _ratio(control: float | None, baseline: float | None) -> float | None:
    if control is None or baseline is None or baseline == 0:
        return None
    return control / baseline


def survival(baseline: LoadedRun, control: LoadedRun, baseline_name: str, mode: ScoringMode) -> ControlSurvival:
    """The control run's task scores beside the baseline's (tasks in the baseline's order, both scored)."""
    record = control.manifest.control
    if record is None:
        raise ValueError(f"{control.folder} is not a control run (its manifest names no control)")
    mine, theirs = baseline.summary.modes[mode], control.summary.modes[mode]
    rows = []
    for task, result in mine.tasks.items():
        other = theirs.tasks.get(task)
        if other is None or result.filled or other.filled:  # a task filled in is no measurement
            continue
        rows.append(
            SurvivalRow(
                task=task,
                metric=score_label(result.primary_metric),
                baseline=result.score,
                control=other.score,
                survival=_ratio(other.score, result.score),
            )
        )
    if rows and set(mine.tasks) == set(theirs.tasks):
        a, b = mine.u2_over_present_tasks, theirs.u2_over_present_tasks
        rows.append(SurvivalRow(task=U2_ROW, metric="U2-Score", baseline=a, control=b, survival=_ratio(b, a)))
    return ControlSurvival(
        control=record.name,
        baseline=baseline_name,
        run_baseline=str(baseline.folder),
        run_control=str(control.folder),
        sends=record.sends,
        not_controlled=list(record.not_controlled),
        tasks=rows,
    )
