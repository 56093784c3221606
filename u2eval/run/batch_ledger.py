"""What a run folder's ``batches.jsonl`` says (``u2eval.run.batch`` writes it): each submission by our label,
its keys, the provider's id and where it stands; and how the run's answers came, for the manifest."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from u2eval.run.folder import RunFolder
from u2eval.run.store import ResponseStore

log = logging.getLogger(__name__)

State = Literal["submitting", "open", "collected", "abandoned"]


@dataclass
class Submission:
    """One chunk as ``batches.jsonl`` tells it: our label, its keys, the provider's id once known, its state."""

    label: str
    keys: list[str]
    batch_id: str | None = None
    state: State = "submitting"


def submissions(folder: RunFolder) -> dict[str, Submission]:
    """Every submission made from the folder, by label, as its lines in ``batches.jsonl`` leave it."""
    found: dict[str, Submission] = {}
    for event in folder.batch_events():
        if event.event == "submitting":
            found[event.label] = Submission(event.label, list(event.keys))
            continue
        known = found.get(event.label)
        if known is None:
            log.warning("%s: %s line for an unknown label %s; skipped", folder.path, event.event, event.label)
            continue
        if event.event == "submitted":
            known.batch_id, known.state = event.batch_id, "open"
        else:
            known.state = "collected" if event.event == "collected" else "abandoned"
    return found


def has_open_batches(folder: RunFolder) -> bool:
    """Whether a batch submitted from the folder (or perhaps submitted: a kill left it unsure) is not collected."""
    return any(s.state in ("submitting", "open") for s in submissions(folder).values())


def answers_by_route(folder: RunFolder, store: ResponseStore) -> dict[str, int]:
    """The manifest's count of the run's cases answered through a batch API and by a live call (infra errors and
    cases with nothing stored are neither)."""
    counts = {"answers.batch": 0, "answers.live": 0}
    for _, completion in folder.iter_answers(store):
        if not completion.is_infra_error:
            counts["answers.batch" if completion.route == "batch" else "answers.live"] += 1
    return counts
