"""Prediction files made elsewhere, joined to the dataset's rows twice: as the official pipeline joins them, and
as they were meant.

The official kit writes ``BASE/{cla,seg,measurement,report}/<scorer key>/<model>/*.jsonl``, one record per
question (``id``, ``question``: the image as a cached file named after the md5 of the row's base64 text and
the prompt text, ``response``). Its scorers join record i to TSV row i by position (facts §1.4, §10). What that
does to a file that lost records or holds non-string answers is reproduced here, per dataset, into an
:class:`~u2eval.records.OfficialAnswer` for each row, which the reference mode scores:

- stage (a) rewrites the cla, seg and measurement files first and drops a line it cannot process (not JSON; a
  non-string answer other than 0 / null / ""; a measurement record without ``response``): later rows shift;
- classification: a file whose record count differs from the dataset's rows is skipped whole;
- location, measurement: rows beyond the records are not scored, and later rows are judged against the
  answer of the next record; records beyond the rows are scored against no truth (location: 'not visible';
  measurement: a NaN RMSE, which the table drops) - which no row can carry, so the dataset is marked;
- report: no stage (a); both lists are cut to the shorter; a null or non-string answer among the first five
  records, a missing ``id`` there, an empty reference there, a non-string answer anywhere or a line that is
  not JSON crashes the report scorer, and every RG and CG result is lost.

Strict joins each record to the row it answers by what identifies it - the image (its md5) and, where rows
share an image, the prompt naming the row's structure - and never by position, unless no record names its
image and the counts agree (said so); otherwise the dataset is refused in one line. The kit's failure
messages saved as answers (``u2eval.scoring.kit_files``) are infra errors in strict, text in reference.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import JsonValue

from u2eval.benchmark.tasks import OfficialScorer as Scorer
from u2eval.data.rows import RowIdentity
from u2eval.records import OfficialAnswer
from u2eval.scoring.kit_files import REPORT_SCORER_KEYS, KitRecord, Ref, kit_keys
from u2eval.scoring.official import PANDAS_NA

# ------------------------------------------------------------------------------------------- records


# --------------------------------------------------------------------------------------- the layout


# ----------------------------------------------------------------------------------------- the joins

# The model whose answers the official scorers edit: its first space is removed before stage (b).
FIRST_SPACE_MODEL = "LLaVA-1.5-13B-HF"
# The keys the measurement scorer reads, in its order (31 is commented out of it).
_MEASUREMENT_SCORER_KEYS = ("18", "27", "50", "57")


@dataclass(frozen=True)
class KitSource:
    """One prediction file: which scorer reads it under which key, its records, and its model's name."""

    scorer: Scorer
    key: str
    label: str  # the file, for people
    records: Sequence[KitRecord]
    model: str  # the model folder's name (the official falls back to it when records carry no `model`)

    @property
    def ref(self) -> Ref | None:
        """Our (task, dataset), or None for a file the scorer reads that is in no U2-Bench task (report/11)."""
        return kit_keys()[self.scorer].get(self.key)

    @property
    def first_space_dropped(self) -> bool:
        """The official removes the first space of every answer of this model (cla, seg, measurement)."""
        first = self.records[0].model if self.records and self.records[0].model else self.model
        return first == FIRST_SPACE_MODEL and self.scorer != "report"


def kit_key(scorer: Scorer, ref: Ref) -> str | None:
    """The official scorer's key for our (task, dataset)."""
    return next((key for key, found in kit_keys()[scorer].items() if found == ref), None)


@dataclass(frozen=True)
class StrictAnswer:
    """What strict mode reads for a row: a record's answer, or why there is none."""

    answer: JsonValue = None
    where: str | None = None  # the record; None: no answer for this row
    missing: str | None = None  # why there is no answer (set exactly when ``where`` is None)
    note: str | None = None  # how it was joined, when not by what identifies it
    failed: bool = False  # the record is a failure record (no answer)


@dataclass(frozen=True)
class RowAnswer:
    strict: StrictAnswer
    official: OfficialAnswer


def _survives_stage_a(record: KitRecord, scorer: Scorer) -> bool:
    """Whether stage (a) writes the line out (it drops what it cannot process)."""
    if scorer == "report":
        return True  # no stage (a)
    if not record.is_json:
        return False  # json.loads(line.strip()) raises (a blank line too), or `data.get` on a non-object
    value = record.official_answer
    if scorer == "measurement":
        return record.has_response and (isinstance(value, str) or not value)
    if record.question_breaks_stage_a:
        return False
    # cla/seg: with options found in the question, a truthy non-string answer raises; without, it passes as is.
    return isinstance(value, str) or not value or not record.has_question


def _stage_b_reads(source: KitSource, kept: Sequence[KitRecord]) -> str | None:
    """Why stage (b) cannot read an answer stage (a) passed through unchanged (no options in the question):
    classification calls ``.strip()`` on every answer (None and NaN included); location on every one that is
    not None, where a record without `response` beside ones with it is NaN."""
    some_have_response = any(r.has_response for r in kept)
    for r in kept:
        if r.has_question:
            continue  # stage (a) rewrote it to an option string
        value = r.official_answer
        if source.scorer == "cla" and (not r.has_response or not isinstance(value, str)):
            return (
                f"{r.where}: an answer stage (b) cannot read ({'none' if not r.has_response else type(value).__name__})"
            )
        if source.scorer == "seg" and (
            (r.has_response and value is not None and not isinstance(value, str))
            or (not r.has_response and some_have_response)
        ):
            return f"{r.where}: an answer stage (b) cannot read"
    return None


def _positional_skip(source: KitSource, kept: Sequence[KitRecord], n_rows: int, dropped: int) -> str | None:
    lost = f" (stage (a) dropped {dropped} line(s))" if dropped else ""
    if source.scorer == "cla" and len(kept) != n_rows:
        return f"the official classification scorer skips the file: {len(kept)} records{lost} for {n_rows} rows"
    if source.scorer in ("cla", "seg") and (why := _stage_b_reads(source, kept)) is not None:
        return f"{why}; the official skips the file"
    if source.scorer == "seg" and len(kept) > n_rows:
        return (
            f"{len(kept)} records for {n_rows} rows: the official scores the {len(kept) - n_rows} extra against "
            "'not visible', which no row here can carry (not reproduced)"
        )
    if source.scorer == "measurement" and any(_has_number(r.official_answer) for r in kept[n_rows:]):
        return (
            f"{len(kept)} records for {n_rows} rows: an extra record with a number makes the RMSE NaN, which the "
            "table drops"
        )
    return None


def _has_number(value: JsonValue) -> bool:
    return isinstance(value, str) and re.search(r"\d", value) is not None


def official_join(source: KitSource, rows: Sequence[RowIdentity]) -> list[OfficialAnswer]:
    """Row i's record as the official pipeline pairs them (after stage (a)), and the file's fate."""
    kept = [r for r in source.records if _survives_stage_a(r, source.scorer)]
    skip = _positional_skip(source, kept, len(rows), len(source.records) - len(kept))
    if skip is not None:
        return [OfficialAnswer(skip=skip) for _ in rows]
    if source.scorer == "seg" and not kept:
        # An empty frame given the truth column takes the TSV's rows: every row is scored with the answer ''.
        where = f"{source.label}: no record after stage (a); the official scores '' on every row"
        return [OfficialAnswer(answer=None, record=where) for _ in rows]
    drop = source.first_space_dropped
    answers = []
    for i in range(len(rows)):
        if i < len(kept):
            r = kept[i]
            answers.append(
                OfficialAnswer(
                    answer=r.official_answer, record=r.where, stage_a=r.has_question, first_space_dropped=drop
                )
            )
        else:
            answers.append(OfficialAnswer(missing=f"the file has {len(kept)} records for {len(rows)} rows"))
    return answers


def _nan_reference(row: RowIdentity) -> bool:
    return row.truth is None or row.truth in PANDAS_NA


def _report_file_crash(source: KitSource, rows: Sequence[RowIdentity] | None) -> str | None:
    """Why the report scorer crashes on one file (``rows`` None: a file of no U2 dataset, its rows unknown).
    It reads every line with json.loads, prints the first five records (their `id`, `response[:100]` and the
    reference `caption[:100]`), then strips every answer that is not None."""
    records = source.records
    broken = next((r for r in records if not r.is_json), None)
    if broken is not None:
        return f"{broken.where}: not a JSON object"
    n = len(records) if rows is None else min(len(records), len(rows))
    if n == 0:
        return None  # an empty frame is skipped, not printed
    if not any(r.has_id for r in records):
        return f"{source.label}: no record has an id (the scorer prints them)"
    if not any(r.has_response for r in records):
        return f"{source.label}: no record has a response"
    for i, r in enumerate(records[:n]):
        value = r.official_answer
        if not r.has_response:
            return f"{r.where}: no response (NaN to pandas)"
        if value is not None and not isinstance(value, str):
            return f"{r.where}: a non-string answer"
        if i < 5 and value is None:
            return f"{r.where}: a null answer among the first five"
        if i < 5 and rows is not None and _nan_reference(rows[i]):
            return f"{rows[i].source_file}:{rows[i].row_index}: an empty reference among the first five rows"
    return None


def report_crash(sources: Sequence[KitSource], rows: Mapping[Ref, Sequence[RowIdentity]]) -> str | None:
    """Why the official report scorer crashes on this model's report files (10, 11, 39, in its order)."""
    by_key = {s.key: s for s in sources if s.scorer == "report"}
    for key in REPORT_SCORER_KEYS:
        source = by_key.get(key)
        if source is not None:
            ref = source.ref
            crash = _report_file_crash(source, None if ref is None else rows.get(ref, []))
            if crash is not None:
                return crash
    return None


def measurement_crash(sources: Sequence[KitSource], rows: Mapping[Ref, Sequence[RowIdentity]]) -> str | None:
    """Why the official measurement scorer crashes: a file left with no record by stage (a) makes
    `row['response']` raise on the frame the truth column gives it, and nothing catches it."""
    by_key = {s.key: s for s in sources if s.scorer == "measurement"}
    for key in _MEASUREMENT_SCORER_KEYS:
        source = by_key.get(key)
        has_rows = source is not None and source.ref is not None and bool(rows.get(source.ref))
        if source is not None and has_rows and not any(_survives_stage_a(r, "measurement") for r in source.records):
            return f"{source.label}: no record after stage (a)"
    return None


_SLOT = re.compile(r"listed in (.+?)\.\n")  # the kit's OD prompt names the structure here


def _hint_filter(record: KitRecord, candidates: list[RowIdentity]) -> list[RowIdentity]:
    """Among rows sharing an image, those the record's prompt names: by the structure in the OD prompt's slot,
    else by the longest structure name the text contains. Rows alike in every hint are the same question."""
    if len({c.hints for c in candidates}) < 2:
        return candidates
    slot = _SLOT.search(record.text)
    if slot is not None:
        named = [c for c in candidates if c.hints and c.hints[0].lower() == slot.group(1).strip().lower()]
        if named:
            return named
    text = record.text.lower()
    found = [c for c in candidates if c.hints and all(h.lower() in text for h in c.hints)]
    longest = max((len(" ".join(c.hints)) for c in found), default=0)
    return [c for c in found if len(" ".join(c.hints)) == longest]


def strict_join(rows: Sequence[RowIdentity], records: Sequence[KitRecord]) -> tuple[list[StrictAnswer], list[str]]:
    """Each record to the row it answers, by its image (and prompt where rows share an image), never by
    position - unless no record names an image and the counts agree. Also: notes on records it cannot place."""
    records = [r for r in records if r.is_json]
    named = [r for r in records if r.images]
    if not named:
        if len(records) == len(rows):
            note = "joined by row order: the records name no image, and the counts agree"
            return [_strict(r, note) for r in records], []
        why = f"{len(records)} records for {len(rows)} rows, and no record names its image: refused"
        return [StrictAnswer(missing=why) for _ in rows], []
    free: dict[str, list[RowIdentity]] = defaultdict(list)
    for row in rows:
        free[row.image_md5].append(row)
    taken: dict[int, KitRecord] = {}
    notes: list[str] = []
    for record in named:
        candidates = [c for md5 in record.images for c in free.get(md5, [])]
        if not candidates:
            continue
        chosen = _hint_filter(record, candidates)
        if len({c.hints for c in chosen}) != 1:
            notes.append(f"{record.where}: its prompt does not tell which of {len(candidates)} rows with its image")
            continue
        row = chosen[0]
        free[row.image_md5].remove(row)
        taken[row.position] = record
    notes += [f"{r.where}: names no image although others do" for r in records if not r.images]
    answers = [
        _strict(taken[row.position]) if row.position in taken else StrictAnswer(missing=_no_record(row, records))
        for row in rows
    ]
    return answers, notes


def _no_record(row: RowIdentity, records: Sequence[KitRecord]) -> str:
    if any(row.image_md5 in r.images for r in records):
        return "the records showing this row's image answer other rows, or do not tell which"
    return "no record of the file shows this row's image"


def _strict(record: KitRecord, note: str | None = None) -> StrictAnswer:
    return StrictAnswer(record.answer, record.where, note=note, failed=record.failed)


def case_prefix(task: str, source_file: str, row_index: int) -> str:
    """A case id without its image hash: ``{task}/{file stem}/{row index}`` (the row it names)."""
    return f"{task}/{Path(source_file).stem}/{row_index}"


def keyed_records(rows: Sequence[RowIdentity], answers: Mapping[str, tuple[str, JsonValue]]) -> list[KitRecord]:
    """Answers keyed by case id, laid out as the kit would have written them: one record per answered row,
    in row order, a row without an answer leaving no line (``answers``: case prefix -> (where, answer))."""
    records = []
    for row in rows:
        found = answers.get(case_prefix(row.task, row.source_file, row.row_index))
        if found is not None:
            where, answer = found
            records.append(KitRecord(where, True, True, answer, answer, True, (row.image_md5,), "", True))
    return records


def unmatched_records(rows: Sequence[RowIdentity], records: Sequence[KitRecord]) -> list[str]:
    """Records whose image is in no row of the dataset (they answer something else)."""
    images = {row.image_md5 for row in rows}
    return [r.where for r in records if r.images and not images.intersection(r.images)]


CrashCheck = Callable[[Sequence[KitSource], Mapping[Ref, Sequence[RowIdentity]]], str | None]


def join_all(
    rows: Iterable[RowIdentity], sources: Sequence[KitSource]
) -> tuple[dict[tuple[str, str, int], RowAnswer], list[str]]:
    """Both joins for every row of the datasets that have a file: (task, source file, row index) -> answers,
    and notes for people (how datasets were joined, records that answer no row, a scorer crash)."""
    by_dataset: dict[Ref, list[RowIdentity]] = defaultdict(list)
    for row in rows:
        by_dataset[(row.task, row.dataset_id)].append(row)
    notes: list[str] = []
    crashes: dict[Scorer, str] = {}
    checks: tuple[tuple[Scorer, CrashCheck, str], ...] = (
        ("report", report_crash, "every RG and CG result is lost"),
        ("measurement", measurement_crash, "every CVE result is lost"),
    )
    for scorer, find, lost in checks:
        crash = find(sources, by_dataset)
        if crash is not None:
            crashes[scorer] = crash
            notes.append(f"the official {scorer} scorer crashes ({crash}): {lost} in reference")
    joined: dict[tuple[str, str, int], RowAnswer] = {}
    for source in sources:
        ref = source.ref
        if ref is None:
            continue
        dataset_rows = by_dataset.get(ref, [])
        if source.scorer in crashes:
            why = f"the official {source.scorer} scorer crashes: {crashes[source.scorer]}"
            official = [OfficialAnswer(skip=why) for _ in dataset_rows]
        else:
            official = official_join(source, dataset_rows)
        strict, strict_notes = strict_join(dataset_rows, source.records)
        for row, s, o in zip(dataset_rows, strict, official, strict=True):
            joined[(row.task, row.source_file, row.row_index)] = RowAnswer(s, o)
        name = f"{ref[0]}/{ref[1]}"
        stray = unmatched_records(dataset_rows, source.records)
        if stray:
            notes.append(f"{name}: {len(stray)} record(s) show an image of no row, e.g. {stray[0]}")
        notes += [f"{name} (reference): {skip}" for skip in sorted({o.skip for o in official if o.skip})]
        shifted = sum(1 for s, o in zip(strict, official, strict=True) if s.where and o.record and s.where != o.record)
        if shifted:
            notes.append(
                f"{name} (reference): {shifted} row(s) judged against another row's record, paired by row order as "
                "the official does"
            )
        joins = {s.note for s in strict if s.note} | {s.missing for s in strict if s.missing and "refused" in s.missing}
        notes += [f"{name} (strict): {note}" for note in sorted(joins)] + [
            f"{name} (strict): {n}" for n in strict_notes
        ]
    return joined, notes
