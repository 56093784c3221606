"""The judge's prompts: one per kind of question (``templates/extraction.j2``, ``templates/clinical.j2``), in our
own words, rendered with jinja2 from a case and its answer. A template's sha256 is part of the judge's identity,
so an edited prompt is another judge and never reuses the old one's readings."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

import jinja2

from u2eval.benchmark.sectors import LOCATION_OPTIONS
from u2eval.benchmark.tasks import get_task
from u2eval.records import CaseMeta, Prompt, TextPart
from u2eval.scoring.judge_records import JudgeKind
from u2eval.scoring.judging import truth_cell

TEMPLATES = Path(__file__).resolve().parent / "templates"
KINDS: tuple[JudgeKind, ...] = ("extraction", "clinical")
# What an extraction reading is, by the task's capability.
READING_KIND = {"classification": "option", "detection": "sector", "regression": "number"}


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # plain text for a model, never HTML
        keep_trailing_newline=False,
    )


def template_hashes() -> dict[str, str]:
    """kind -> sha256 of its template file, as recorded in the judge's identity."""
    return {kind: hashlib.sha256((TEMPLATES / f"{kind}.j2").read_bytes()).hexdigest() for kind in KINDS}


def choices(case: CaseMeta) -> tuple[str, ...]:
    """The readings an extraction may give for this case: its options, or the image positions."""
    task = get_task(case.task)
    if task.capability == "detection":
        return LOCATION_OPTIONS
    return tuple(case.options) or task.dataset(case.dataset_id).labels


def _values(kind: JudgeKind, case: CaseMeta, answer: str) -> dict[str, object]:
    task = get_task(case.task)
    if kind == "clinical":
        reference = truth_cell(case, task.truth_column) or ""
        return {
            "task": "caption" if task.key == "cg" else "report",
            "anatomy": case.anatomy,
            "reference": reference.strip(),
            "answer": answer.strip(),
        }
    ds = task.dataset(case.dataset_id)
    reading = READING_KIND[task.capability]
    return {
        "kind": reading,
        "choices": choices(case) if reading != "number" else (),
        "quantity": ds.quantity or ds.measurement_key or "measurement",
        "unit": ds.unit or "",
        "answer": answer.strip(),
    }


def judge_prompt(kind: JudgeKind, case: CaseMeta, answer: str | None) -> Prompt:
    """The text a judge is sent about one case's answer (no image: the judge reads words, not the scan)."""
    text = _environment().get_template(f"{kind}.j2").render(**_values(kind, case, answer or ""))
    return Prompt(
        case_id=case.case_id,
        system=None,
        parts=(TextPart(text),),
        template=f"judge/{kind}",
        template_sha256=template_hashes()[kind],
    )
