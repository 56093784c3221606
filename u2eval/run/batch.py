"""``u2eval run --batch``: a run's requests through the provider's batch API, as crash-safe as a live run.

The requests are the live run's: the same case stream, prompts and store keys. Those the store answers, and
those an open batch holds already, are not submitted again. The rest are split within the adapter's
``batch_limits`` (requests, and payload bytes: an item and its newline each; with U2-Bench's images the bytes
bind) in the stream's order, and each chunk goes through three steps, each announced in the run folder's
``batches.jsonl`` (``RunFolder.record_batch``: appended and fsynced) before the next one starts:

1. ``submitting``: a fresh label of ours and the chunk's keys;
2. the provider is asked: ``find_batch(label)`` first when a try failed (it may have made the batch anyway),
   else ``submit_batch(items, label)``;
3. ``submitted``: the provider's batch id.

A run killed anywhere loses nothing and submits nothing twice: a ``submitting`` line without its id is settled
by the next run with ``find_batch(label)`` (``submitted`` when the provider has it, else ``abandoned``: its keys
are free again) before anything else. Then the open batches are polled (``batch_status``); each that has ended
(or expired, failed, was cancelled) is collected: its requests are read again from the dataset (a batch's keys
are one stretch of the stream, so only one batch's requests are held at a time), ``batch_results`` turns its
answers into Completions (``route="batch"``; items that failed, expired or were cancelled become infra errors,
never scored, asked again by the next run), the store keeps those it does not answer yet (a collection cut
short by a kill is redone without storing anything twice), then ``collected`` is recorded.

Without ``wait`` the run polls once and, while batches are open, raises :class:`BatchesInProgress` (no summary
yet); with ``wait`` it polls every ``poll_interval_s`` until all are collected, then the run scores as a live
run does. A live run on a folder with open batches collects what has ended, asks live only what no open batch
holds, and stops the same way while batches are open: nothing is paid for twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from typing import TypeVar

from tenacity import AsyncRetrying, RetryError, retry_if_exception, stop_after_attempt

from u2eval.errors import AdapterError, ConfigError, U2EvalError
from u2eval.models.protocol import BatchLimits, BatchStatus, ModelAdapter, ModelRequest, SupportsBatch
from u2eval.records import Completion, ImagePart
from u2eval.run.batch_ledger import Submission, has_open_batches, submissions
from u2eval.run.budget import CostBudget
from u2eval.run.case_stream import CaseStream, Reporter
from u2eval.run.dispatch import Dispatcher
from u2eval.run.folder import RunFolder
from u2eval.run.options import RunOptions
from u2eval.run.pacing import DispatchOptions, RetryWait, failure_kind
from u2eval.run.records import BatchEvent
from u2eval.run.store import ResponseStore

log = logging.getLogger(__name__)

T = TypeVar("T")


class BatchesInProgress(U2EvalError):
    """Batches are still open at the end of a run without ``--wait``: nothing is scored yet."""

    def __init__(self, batches: int, requests: int) -> None:
        super().__init__(
            f"{batches} batch(es) in progress, {requests} requests; run the same command again to collect, or --wait"
        )
        self.batches = batches
        self.requests = requests


@dataclass(frozen=True)
class BatchSettings:
    submit: bool  # --batch: submit what the store lacks (False: a live run on a folder with open batches)
    wait: bool = False
    poll_interval_s: float = 60.0
    batch_size: int | None = None  # at most this many requests a batch, within the provider's limits


@dataclass
class BatchStats:
    batches: int = 0  # batches this run created
    submitted: int = 0  # requests in them
    collected: int = 0  # batches this run collected
    held: int = 0  # requests not asked because an open batch holds them

    def as_manifest(self) -> dict[str, int]:
        return {f"batch.{name}": value for name, value in dataclasses.asdict(self).items()}


@dataclass
class _Chunk:
    items: list[bytes] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    bytes: int = 0


def _slim(request: ModelRequest) -> ModelRequest:
    """The request without the base64 copy of its image (a cache of the bytes it keeps): about half its memory."""
    parts = tuple(dataclasses.replace(p, b64="") if isinstance(p, ImagePart) else p for p in request.prompt.parts)
    case = dataclasses.replace(request.case, image_b64="")
    return ModelRequest(request.key, case, dataclasses.replace(request.prompt, parts=parts))


def _failed(request: ModelRequest, kind: str, message: str) -> Completion:
    return Completion.model_validate(
        {"case_id": request.case.case_id, "key": request.key, "error": kind, "error_message": message[:500]}
        | {"route": "batch"}
    )


def batch_run(
    adapter: ModelAdapter,
    folder: RunFolder,
    store: ResponseStore,
    options: RunOptions,
    retry: DispatchOptions,
    reporter: Reporter,
) -> BatchRun | None:
    """The run's dealings with a batch API: when it asks for one (--batch), or batches open in its folder must
    be honoured (collected, never asked again live); None: neither."""
    if not (options.batch or has_open_batches(folder)):
        return None
    settings = BatchSettings(options.batch, options.wait, options.poll_interval_s, options.batch_size)
    return BatchRun(adapter, folder, store, settings, retry, reporter)


class BatchRun:
    """One run's dealings with the provider's batch API, recorded in its folder's ``batches.jsonl``."""

    def __init__(
        self,
        adapter: ModelAdapter,
        folder: RunFolder,
        store: ResponseStore,
        settings: BatchSettings,
        retry: DispatchOptions,
        reporter: Reporter,
    ) -> None:
        if not isinstance(adapter, SupportsBatch):
            name = f"{adapter.info.adapter}/{adapter.info.model}"
            raise ConfigError(f"{name} has no batch API in u2eval (--batch: openai, anthropic, google)")
        self.adapter: SupportsBatch = adapter
        self.folder, self.store, self.settings, self.retry = folder, store, settings, retry
        self.reporter = reporter
        self.budget: CostBudget | None = None
        self.submissions = submissions(folder)
        self.stats = BatchStats()

    # ------------------------------------------------------------------------------------------- the run

    async def run(self, stream: CaseStream, dispatcher: Dispatcher, stored: Callable[[list[Completion]], None]) -> None:
        """Settle what a killed run left unsure, submit (or, for a live run, ask live) what no batch holds, then
        collect; raises BatchesInProgress when batches are still open and the run does not wait."""

        def again() -> CaseStream:  # the same cases, prompts and keys, read once more (nothing written)
            s = stream
            return CaseStream(s.source, s.tasks, s.options, s.key_of, s.store, s.cases_out)

        await self._settle()
        held = {key for s in self.submissions.values() if s.state == "open" for key in s.keys}
        self.budget = dispatcher.budget  # --max-cost: an open batch is in flight; a new request is reserved first
        remainder = self._not_held(stream, held)
        if self.settings.submit:
            await self._submit_all(remainder, dispatcher)
        else:
            await dispatcher.run(remainder, stored)
        await self._collect_until_done(again)

    def _not_held(self, requests: Iterable[ModelRequest], held: set[str]) -> Iterable[ModelRequest]:
        for request in requests:
            if request.key in held:
                self.stats.held += 1
                if self.budget is not None and self.settings.submit:  # (a live run reads on another thread)
                    self.budget.reserve([request])  # in flight until collected (the reservation is kept)
                continue
            yield request

    def _record(self, event: str, label: str, **fields: object) -> None:
        at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        self.folder.record_batch(BatchEvent.model_validate({"event": event, "label": label, "at": at, **fields}))

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """A call to the batch API, retried as the dispatcher retries a request; a failure left is a ConfigError
        (nothing is lost: the next run goes on from what batches.jsonl records)."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retry.max_attempts),
            wait=RetryWait(self.retry),
            retry=retry_if_exception(lambda exc: isinstance(exc, AdapterError) and exc.retryable),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await call()
        except (AdapterError, RetryError) as exc:
            raise ConfigError(f"the batch API failed to {what} ({failure_kind(exc)}): {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover - AsyncRetrying either returns or raises

    # ---------------------------------------------------------------------------------------- submitting

    async def _settle(self) -> None:
        """A ``submitting`` line without its id (a kill between the two): the provider is asked for a batch of
        that label; found, it is this run's to collect; not found, it was never made."""
        for sub in self.submissions.values():
            if sub.state != "submitting":
                continue
            found = await self._call(f"find batch {sub.label}", partial(self.adapter.find_batch, sub.label))
            if found is None:
                self._record("abandoned", sub.label, detail="the provider has no batch of this label: never made")
                sub.state = "abandoned"
            else:
                self._record("submitted", sub.label, batch_id=found)
                sub.batch_id, sub.state = found, "open"

    def _limits(self) -> BatchLimits:
        limits = self.adapter.batch_limits
        if self.settings.batch_size is not None:
            return BatchLimits(min(limits.max_requests, self.settings.batch_size), limits.max_bytes)
        return limits

    async def _submit_all(self, requests: Iterable[ModelRequest], dispatcher: Dispatcher) -> None:
        limits, chunk = self._limits(), _Chunk()
        not_sent: list[Completion] = []
        for request in requests:
            if self.budget is not None and not self.budget.reserve([request]):
                not_sent += self.budget.refusal([request])  # not asked: the budget would be passed
                continue
            item = self.adapter.batch_item(request)
            size = len(item) + 1
            if size > limits.max_bytes:
                message = f"the request is {size} bytes; one batch holds at most {limits.max_bytes}: ask it live"
                not_sent.append(_failed(request, "bad_request", message))
                continue
            if chunk.keys and (len(chunk.keys) >= limits.max_requests or chunk.bytes + size > limits.max_bytes):
                await self._submit(chunk, dispatcher)
                chunk = _Chunk()
            chunk.items.append(item)
            chunk.keys.append(request.key)
            chunk.bytes += size
        if chunk.keys:
            await self._submit(chunk, dispatcher)
        self.store.append(not_sent)

    async def _submit(self, chunk: _Chunk, dispatcher: Dispatcher) -> None:
        if not self.stats.batches:
            await dispatcher.preflight()  # a wrong key or model stops the run now, not after a day's wait
        label = f"u2eval-{secrets.token_hex(8)}"
        self._record("submitting", label, keys=chunk.keys, bytes=chunk.bytes)
        self.submissions[label] = sub = Submission(label, chunk.keys)
        batch_id = await self._create(chunk.items, label)
        self._record("submitted", label, batch_id=batch_id)
        sub.batch_id, sub.state = batch_id, "open"
        self.stats.batches += 1
        self.stats.submitted += len(chunk.keys)
        self.reporter.note = f"submitted {self.stats.batches} batch(es), {self.stats.submitted} requests"
        self.reporter.report()

    async def _create(self, items: Sequence[bytes], label: str) -> str:
        """``submit_batch``; after a failed try, a batch of this label is looked for before another one: an
        answer lost on the way back must not make a second batch."""
        for attempt in range(1, self.retry.max_attempts + 1):
            try:
                return await self.adapter.submit_batch(items, label)
            except AdapterError as exc:
                found = await self._call(f"find batch {label}", lambda: self.adapter.find_batch(label))
                if found is not None:
                    return found
                if not exc.retryable or attempt == self.retry.max_attempts:
                    self._record("abandoned", label, detail=str(exc)[:500])
                    self.submissions[label].state = "abandoned"
                    raise ConfigError(f"the batch API refused batch {label} ({exc.kind}): {exc}") from None
                await asyncio.sleep(min(self.retry.backoff_max_s, self.retry.backoff_initial_s * 2 ** (attempt - 1)))
        raise AssertionError("unreachable")  # pragma: no cover

    # ---------------------------------------------------------------------------------------- collecting

    async def _collect_until_done(self, again: Callable[[], CaseStream]) -> None:
        while True:
            waiting = [s for s in self.submissions.values() if s.state == "open"]
            if not waiting:
                self.reporter.note = ""
                return
            statuses = {}
            for sub in waiting:
                assert sub.batch_id is not None
                batch_id = sub.batch_id
                statuses[sub.label] = await self._call(f"poll {batch_id}", partial(self.adapter.batch_status, batch_id))
            ready = [s for s in waiting if statuses[s.label].state != "in_progress"]
            if ready:
                await self._collect(ready, statuses, again)
            still = [s for s in waiting if s.state == "open"]
            self._progress(still, statuses)
            if not still:
                return
            if not self.settings.wait:
                raise BatchesInProgress(len(still), sum(len(s.keys) for s in still))
            await asyncio.sleep(self.settings.poll_interval_s)

    def _progress(self, still: list[Submission], statuses: Mapping[str, BatchStatus]) -> None:
        done = sum(statuses[s.label].done or 0 for s in still)
        total = sum(statuses[s.label].total or len(s.keys) for s in still)
        self.reporter.note = f"{len(still)} batch(es) in progress: {done} of {total} requests done" if still else ""
        self.reporter.report()

    async def _collect(
        self, ready: list[Submission], statuses: Mapping[str, BatchStatus], again: Callable[[], CaseStream]
    ) -> None:
        """Collect the batches that have ended, reading their requests from the dataset once more. A batch is
        collected as soon as its last request is met, so only one batch's requests are held at a time."""
        owner = {key: sub for sub in ready for key in sub.keys}
        missing = {sub.label: {k for k in sub.keys if not self.store.answered(k)} for sub in ready}
        found: dict[str, dict[str, ModelRequest]] = {sub.label: {} for sub in ready}
        for sub in ready:
            if not missing[sub.label]:  # all stored by a collection a kill cut short
                await self._collect_one(sub, {}, statuses[sub.label])
        wanted = {key for keys in missing.values() for key in keys}
        if wanted:
            for request in again().again(wanted):
                sub = owner[request.key]
                found[sub.label][request.key] = _slim(request)
                missing[sub.label].discard(request.key)
                if not missing[sub.label]:
                    await self._collect_one(sub, found.pop(sub.label), statuses[sub.label])
        for sub in ready:  # keys the run's cases no longer hold (another --limit): their answers have no case
            if sub.state == "open":
                log.warning(
                    "batch %s: %d request(s) are not among this run's cases; their answers are not stored",
                    sub.batch_id,
                    len(missing[sub.label]),
                )
                await self._collect_one(sub, found.pop(sub.label, {}), statuses[sub.label])

    async def _collect_one(self, sub: Submission, requests: dict[str, ModelRequest], status: BatchStatus) -> None:
        assert sub.batch_id is not None
        batch_id = sub.batch_id
        completions: list[Completion] = []
        if requests:
            got = await self._call(f"collect {batch_id}", lambda: self.adapter.batch_results(batch_id, requests))
            completions = self._one_each(requests, got, status)
        new = [c for c in completions if not self.store.answered(c.key)]
        self.store.append(new)
        answers = sum(1 for c in new if not c.is_infra_error)
        self._record(
            "collected",
            sub.label,
            batch_id=batch_id,
            state=status.state,
            answers=answers,
            errors=len(new) - answers,
            detail=status.detail,
        )
        sub.state = "collected"
        self.stats.collected += 1
        self.reporter.stored(answers)

    @staticmethod
    def _one_each(
        requests: Mapping[str, ModelRequest], completions: list[Completion], status: BatchStatus
    ) -> list[Completion]:
        """One Completion per request, marked as a batch answer; a key the adapter left out is an infra error."""
        by_key = {c.key: c for c in completions}
        kept = []
        for key, request in requests.items():
            completion = by_key.get(key)
            if completion is None:
                why = f"the batch ({status.state}) returned nothing for this request"
                completion = _failed(request, "missing", why + (f": {status.detail}" if status.detail else ""))
            kept.append(completion if completion.route == "batch" else completion.model_copy(update={"route": "batch"}))
        return kept
