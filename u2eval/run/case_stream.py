"""The dataset turned into model requests: every case of the run recorded in its case list, and a request
for each one the store cannot answer yet; and where the run stands, for a progress bar."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path

from u2eval.benchmark.prompts import render
from u2eval.benchmark.tasks import TaskSpec
from u2eval.data.controls import ControlImages, with_image
from u2eval.data.reader import estimate_rows, iter_cases
from u2eval.data.reader_process import iter_cases_in_child
from u2eval.data.rows import RowIdentity, iter_row_identities
from u2eval.data.sources import DataSource
from u2eval.errors import DataError
from u2eval.models.protocol import ModelRequest
from u2eval.records import Case, ImagePart, Prompt
from u2eval.run.dispatch import Dispatcher
from u2eval.run.locks import LineFile
from u2eval.run.options import ProgressHook, RunOptions, RunProgress
from u2eval.run.records import RunCase
from u2eval.run.sent_prompts import PROMPTS_FILE, PromptTexts
from u2eval.run.shards import in_shard
from u2eval.run.store import ResponseStore

log = logging.getLogger(__name__)


class CaseStream:
    """Turns the dataset into requests for the cases the store cannot answer, recording every case."""

    def __init__(
        self,
        source: DataSource,
        tasks: tuple[TaskSpec, ...],
        options: RunOptions,
        key_of: Callable[[Prompt], str],
        store: ResponseStore,
        cases_out: Path,
    ) -> None:
        self.source, self.tasks, self.options = source, tasks, options
        self.key_of, self.store, self.cases_out = key_of, store, cases_out
        self.case_ids: list[str] = []
        self.data_errors: list[str] = []
        self.reused = 0
        self.on_case: Callable[[], None] = lambda: None
        # A control run sends another image (or none) in each case's image's place: u2eval.data.controls.
        self.controls = ControlImages(options.control, source, tasks, options.seed) if options.control else None

    @property
    def not_controlled(self) -> list[str]:
        """The case ids a control could not give another image (their dataset has no other)."""
        return list(self.controls.not_controlled) if self.controls is not None else []

    def _error(self, error: DataError) -> None:
        log.warning("skipped %s", error)
        self.data_errors.append(str(error))

    def _cases(self, on_error: Callable[[DataError], None] | None = None) -> Iterator[Case]:
        in_child = self.options.reader_process
        if in_child is None:
            in_child = self.source.kind != "sample"
        read = iter_cases_in_child if in_child else iter_cases
        return read(self.source, self.tasks, on_error=on_error or self._error, limit=self.options.limit)

    def _kept(self, case: Case) -> bool:
        return kept(self.options, case)

    def _prompt(self, case: Case, task: TaskSpec) -> Prompt:
        """The case's prompt; under a control, with the control's image (cases.jsonl records what was sent)."""
        prompt = render(case, task, self.options.prompt)
        if self.controls is None:
            return prompt
        own = next(p for p in prompt.parts if isinstance(p, ImagePart))
        return with_image(prompt, self.controls.image(case, own))

    def __iter__(self) -> Iterator[ModelRequest]:
        by_key = {t.key: t for t in self.tasks}
        pending: set[str] = set()
        with (
            LineFile(self.cases_out) as out,  # unbuffered: a full disk is met at a write, not at the close
            PromptTexts(self.cases_out.parent / PROMPTS_FILE) as prompts,
        ):
            for case in self._cases():
                if not self._kept(case):
                    continue
                try:
                    prompt = self._prompt(case, by_key[case.task])
                except DataError as exc:
                    self._error(exc)
                    continue
                key = self.key_of(prompt)
                meta = case.meta()
                if self.options.prompt.source == "ours":  # the row's own prompt was not sent: not kept beside it
                    meta = meta.model_copy(update={"columns": {k: v for k, v in meta.columns.items() if k != "prompt"}})
                sent = prompts.record(prompt)
                out.write(RunCase(key=key, case=meta, prompt=sent).model_dump_json() + "\n")
                self.case_ids.append(case.case_id)
                self.on_case()
                if self.store.answered(key) or key in pending:
                    self.reused += 1
                    continue
                pending.add(key)
                yield ModelRequest(key=key, case=case, prompt=prompt)

    def again(self, keys: Collection[str]) -> Iterator[ModelRequest]:
        """The requests of these store keys, read from the dataset once more in the run's order, each key once;
        nothing is written and no data error is reported twice. A provider batch's answers are read against
        the requests they answer (``u2eval.run.batch``). Stops as soon as every key has been met."""
        by_key = {t.key: t for t in self.tasks}
        wanted = set(keys)
        cases = self._cases(on_error=lambda error: None)
        try:
            for case in cases:
                if not wanted:
                    return
                if not self._kept(case):
                    continue
                try:
                    prompt = self._prompt(case, by_key[case.task])
                except DataError:
                    continue
                key = self.key_of(prompt)
                if key in wanted:
                    wanted.discard(key)
                    yield ModelRequest(key=key, case=case, prompt=prompt)
        finally:
            close = getattr(cases, "close", None)
            if close is not None:
                close()  # a reader in a child process stops now, not when collected


def kept(options: RunOptions, case: Case) -> bool:
    """Whether the run keeps this case (its anatomy selection, its shard, its chosen case ids)."""
    if options.anatomy is not None and case.anatomy.lower() not in options.anatomy:
        return False
    if options.shard is not None and not in_shard(case.case_id, options.shard):
        return False
    return options.case_ids is None or case.case_id in options.case_ids


def rows_asked(source: DataSource, tasks: Sequence[TaskSpec], limit: int | None) -> Iterator[RowIdentity]:
    """The rows a replay lays out as the official kit would have written them: with ``--limit N``, the first N
    of each dataset, as if the kit had been run on those (reading errors are the case reader's to report)."""
    for row in iter_row_identities(source, tasks):
        if limit is None or row.position < limit:
            yield row


def expected_cases(source: DataSource, tasks: Sequence[TaskSpec], options: RunOptions) -> int | None:
    """The cases the run will hold, for the progress total: the rows of its tasks' files (counted without
    parsing), at most ``limit`` per dataset; unknown under an anatomy selection or a shard."""
    if options.case_ids is not None:
        return len(options.case_ids)
    if options.anatomy is not None or options.shard is not None:
        return None
    rows = estimate_rows(source, tasks)
    if options.limit is not None:
        rows = min(rows, options.limit * sum(len(t.datasets) for t in tasks))
    return rows


class Reporter:
    """Tells the progress hook where the run stands, after each case reused and each answer stored."""

    def __init__(
        self, hook: ProgressHook | None, stream: CaseStream, dispatcher: Dispatcher, total: int | None
    ) -> None:
        self.hook, self.stream, self.dispatcher, self.total = hook, stream, dispatcher, total
        self.answered = 0
        self.note = ""  # where the run's provider batches stand (u2eval.run.batch)

    def report(self) -> None:
        if self.hook is not None:
            stats = self.dispatcher.stats
            done = self.stream.reused + self.answered
            self.hook(RunProgress(done, self.total, stats.retries, stats.infra_errors, self.note))

    def stored(self, n: int) -> None:
        self.answered += n
        self.report()
