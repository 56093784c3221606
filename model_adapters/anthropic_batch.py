"""Anthropic's Message Batches API for the Anthropic adapter (``u2eval run --batch``): ``SupportsBatch``.

Not an adapter (no ``create``): ``AnthropicAdapter`` inherits ``AnthropicBatches`` and supplies the three
things it does not know here: how a request is built, how a Message is read, and how an SDK error is classified
(the very functions of a live call, so a batch answer is read exactly as a live one).

An item is ``{"custom_id": <store key>, "params": <the body a live request sends>}`` in the compact JSON the SDK
itself writes. On the wire each custom_id becomes ``<key>-<tag>``, ``tag`` being the first 24 hex digits of
sha256(label); results are joined back to keys by what precedes the last ``-``.

Finding a batch again. Anthropic keeps no metadata on a batch, and its requests (so their custom_ids) can be read
back only from its results, once it has ended; a running batch shows nothing of its own but its size and when it
was made. So ``submit_batch`` makes two batches:

1. a *marker*: one 1-token text request whose custom_id is ``u2evalmark-<tag>-<n>`` (``n`` the number of items),
   cancelled at once, so that it ends within moments and costs nothing (one whose cancel was lost answers its
   one request: a few tokens);
2. the batch itself, created after the marker.

``find_batch(label)`` reads the workspace's batches newest first (``messages.batches.list``) down to the label's
newest marker (a batch of one request is read to see whether it is one; one still running is waited for,
``marker_wait_s`` in all, then a retryable ``AdapterError``: a marker whose cancel was lost, or anyone's running
batch of one request, can hold a search up that long). The batch, if it was created at all, is one of those
listed above the marker (created after it) with ``n`` requests: an ended one is ours when its results'
custom_ids carry the tag; a running one cannot be read, and when it is the only candidate it is taken for ours.
Several running candidates cannot be told apart until they end: then find_batch raises a retryable
``AdapterError`` rather than answer, so nothing is submitted twice. Where the run was killed:

- before the marker: no marker, None (nothing was created; the workspace is read back 29 days, the time
  Anthropic keeps results);
- between the marker and the batch: no candidate, None; or another client's running batch of the same size,
  taken for ours: none of its results names one of our keys, so they all come back ``missing`` and the next
  run resubmits them (time lost; nothing paid twice, nothing scored wrongly);
- after the batch was created (the id never recorded, or the create's reply lost): it is a candidate, and found.

``submit_batch`` itself asks ``find_batch`` when a create fails in a way that may have created it anyway
(a timeout, a dropped connection, a 5xx), and returns the batch found instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, TypeVar

import anthropic
import httpx2
from anthropic.types import Message
from anthropic.types.messages import MessageBatch, MessageBatchResult

from model_adapters._wire import one_line, redact
from u2eval.errors import AdapterError
from u2eval.models.protocol import BatchLimits, BatchStatus, ModelRequest
from u2eval.records import Completion, ErrorKind, ImageSent

API_MAX_REQUESTS = 100_000  # Anthropic's published limits on one Message Batch: requests, and
API_MAX_BYTES = 256_000_000  # "256 MB" of request body, read as 10^6 bytes, the smaller reading
RESULTS_KEPT_S = 29 * 24 * 3600.0  # Anthropic keeps a batch's results 29 days after its creation
TAG_CHARS = 24
_ENVELOPE = len(b'{"requests":[]}')
_PER_ITEM = 1 + TAG_CHARS + 1  # "-<tag>" added to each custom_id, and the comma between items
# The items' own bytes: what the wire adds to them at most is left for it, so a body never passes API_MAX_BYTES.
BATCH_LIMITS = BatchLimits(API_MAX_REQUESTS, API_MAX_BYTES - _ENVELOPE - API_MAX_REQUESTS * _PER_ITEM)
_KEY = re.compile(rf"[A-Za-z0-9_-]{{1,{64 - 1 - TAG_CHARS}}}")  # custom_id: 1-64 of [A-Za-z0-9_-], the tag included
_MARKER = "u2evalmark"
T = TypeVar("T")
_ERROR_KINDS: Mapping[str, ErrorKind] = {
    "invalid_request_error": "bad_request",
    "not_found_error": "bad_request",
    "request_too_large": "bad_request",
    "authentication_error": "auth",
    "permission_error": "auth",
    "billing_error": "auth",
    "rate_limit_error": "rate_limit",
    "timeout_error": "timeout",
    "gateway_timeout_error": "timeout",
}


def label_tag(label: str) -> str:
    """What every custom_id of the label's batch, and its marker, carry: 24 hex digits of sha256(label)."""
    return hashlib.sha256(label.encode()).hexdigest()[:TAG_CHARS]


def compact(value: object) -> bytes:
    """JSON as the SDK writes a request body: compact, UTF-8, no ASCII escapes."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def wire_bytes(items: Sequence[bytes]) -> int:
    """The size of the ``POST /v1/messages/batches`` body that carries ``items`` (tags and commas included)."""
    return _ENVELOPE + sum(len(item) for item in items) + len(items) * _PER_ITEM - (1 if items else 0)


def key_of(custom_id: str) -> str:
    """The store key a wire custom_id carries (``<key>-<tag>``)."""
    return custom_id.rpartition("-")[0]


def _size(batch: MessageBatch) -> int:
    counts = batch.request_counts
    return counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired


def _marker_size(custom_id: str | None, tag: str) -> int | None:
    """The number of items the marker announces, when ``custom_id`` is the marker of ``tag``'s label."""
    prefix = f"{_MARKER}-{tag}-"
    if custom_id is None or not custom_id.startswith(prefix) or not custom_id[len(prefix) :].isdigit():
        return None
    return int(custom_id[len(prefix) :])


def status_of(batch: MessageBatch) -> BatchStatus:
    """Anthropic's view of a batch as a BatchStatus. An ended batch always has a results file (its errored,
    expired and cancelled requests are read from it as infra errors), so it is ``ended`` however it ended;
    only one whose results are gone (archived, 29 days on) is ``expired``."""
    counts = batch.request_counts
    total = _size(batch)
    if batch.processing_status != "ended":
        detail = "canceling" if batch.processing_status == "canceling" else None
        return BatchStatus("in_progress", done=total - counts.processing, total=total, detail=detail)
    if batch.results_url is None:
        return BatchStatus("expired", done=total, total=total, detail="its results are no longer available")
    unanswered = [f"{n} {word}" for n, word in ((counts.errored, "errored"), (counts.expired, "expired")) if n]
    if counts.canceled:
        unanswered.append(f"{counts.canceled} canceled")
    return BatchStatus("ended", done=total, total=total, detail=", ".join(unanswered) or None)


def _failed(request: ModelRequest, kind: ErrorKind, message: str) -> Completion:
    return Completion(case_id=request.case.case_id, key=request.key, error=kind, error_message=message, route="batch")


class AnthropicBatches:
    """``SupportsBatch`` over an ``anthropic.AsyncAnthropic`` client (``_client``) for one model (``_model``)."""

    _client: anthropic.AsyncAnthropic
    _model: str
    _key: str
    marker_wait_s = 600.0  # how long one find_batch waits in all for running batches of one request (markers?)
    poll_s = 5.0  # and how often it asks meanwhile

    # -- what the adapter supplies: the live path's own pieces ---------------------------------------

    def _build(self, request: ModelRequest) -> tuple[dict[str, Any], ImageSent | None]:
        raise NotImplementedError

    def _read(self, message: Message, request: ModelRequest, image_sent: ImageSent | None) -> Completion:
        raise NotImplementedError

    def _classify(self, exc: anthropic.AnthropicError) -> AdapterError:
        raise NotImplementedError

    # -- SupportsBatch ---------------------------------------------------------------------------------

    @property
    def batch_limits(self) -> BatchLimits:
        return BATCH_LIMITS

    def batch_item(self, request: ModelRequest) -> bytes:
        if not _KEY.fullmatch(request.key):
            raise ValueError(f"a store key cannot be a custom_id: {request.key!r}")
        try:
            body, _ = self._build(request)
        except ValueError as exc:  # an image that cannot be read or fitted: sending it cannot help
            raise AdapterError(str(exc), kind="bad_request", retryable=False) from exc
        return compact({"custom_id": request.key, "params": body})

    async def submit_batch(self, items: Sequence[bytes], label: str) -> str:
        size = sum(len(item) for item in items)
        if not 0 < len(items) <= BATCH_LIMITS.max_requests or size > BATCH_LIMITS.max_bytes:
            raise ValueError(f"{len(items)} items of {size} bytes do not fit one Message Batch ({BATCH_LIMITS})")
        tag = label_tag(label)
        requests: list[Any] = []
        for item in items:
            request = json.loads(item)
            request["custom_id"] = f"{request['custom_id']}-{tag}"
            requests.append(request)
        marker = await self._call(self._client.messages.batches.create(requests=[self._marker(tag, len(items))]))
        # A marker that cannot be cancelled answers its one tiny request: it stays a marker all the same.
        with contextlib.suppress(anthropic.AnthropicError):
            await self._client.messages.batches.cancel(marker.id)
        try:
            batch = await self._client.messages.batches.create(requests=requests)
        except anthropic.AnthropicError as exc:
            error = self._classify(exc)
            if error.retryable:  # a timeout, a lost connection, a 5xx: it may have been created all the same
                with contextlib.suppress(AdapterError):  # not found now: the create's own error is what to say
                    found = await self.find_batch(label)
                    if found is not None:
                        return found
            raise error from None
        return batch.id

    async def find_batch(self, label: str) -> str | None:
        tag = label_tag(label)
        horizon = time.time() - RESULTS_KEPT_S
        deadline = time.monotonic() + self.marker_wait_s
        newer: list[MessageBatch] = []
        firsts: dict[str, str | None] = {}
        try:
            async for batch in self._client.messages.batches.list(limit=100):
                if batch.created_at.timestamp() < horizon:
                    break
                if _size(batch) == 1:
                    firsts[batch.id] = await self._first_custom_id(batch, until=deadline)
                    announced = _marker_size(firsts[batch.id], tag)
                    if announced is not None:
                        return await self._after_marker(newer, announced, tag, firsts)
                newer.append(batch)
        except (anthropic.AnthropicError, httpx2.HTTPError, ValueError) as exc:
            raise self._unreadable(exc) from None
        return None

    async def batch_status(self, batch_id: str) -> BatchStatus:
        return status_of(await self._call(self._client.messages.batches.retrieve(batch_id)))

    async def batch_results(self, batch_id: str, requests: Mapping[str, ModelRequest]) -> list[Completion]:
        batch = await self._call(self._client.messages.batches.retrieve(batch_id))
        if batch.processing_status != "ended":
            raise AdapterError(f"batch {batch_id} has not ended", kind="server", retryable=True)
        done: dict[str, Completion] = {}
        if batch.results_url is not None:
            results = await self._call(self._client.messages.batches.results(batch_id))
            try:
                async for line in results:
                    request = requests.get(key_of(line.custom_id))
                    if request is not None:
                        done[request.key] = await self._completion(line.result, request)
            except (anthropic.AnthropicError, httpx2.HTTPError, ValueError) as exc:
                raise self._unreadable(exc) from None
            finally:
                await results.close()
            missing = f"batch {batch_id}'s results hold no answer to this request"
        else:
            missing = f"batch {batch_id}'s results are no longer available"
        return [done.get(key) or _failed(request, "missing", missing) for key, request in requests.items()]

    # -- the parts -------------------------------------------------------------------------------------

    def _marker(self, tag: str, size: int) -> Any:
        content = [{"type": "text", "text": "u2eval batch marker"}]
        params = {"model": self._model, "max_tokens": 1, "messages": [{"role": "user", "content": content}]}
        return {"custom_id": f"{_MARKER}-{tag}-{size}", "params": params}

    def _unreadable(self, exc: Exception) -> AdapterError:
        """A results stream that failed: the SDK's errors as a live call's, a stream that broke off after its
        headers (httpx) or a line that is not a result (JSON, pydantic: ValueError) as retryable."""
        if isinstance(exc, anthropic.AnthropicError):
            return self._classify(exc)
        if isinstance(exc, httpx2.HTTPError):
            return AdapterError(f"results broke off: {one_line(str(exc))}", kind="connection", retryable=True)
        return AdapterError(f"unreadable results: {one_line(str(exc))}", kind="malformed", retryable=True)

    async def _call(self, pending: Awaitable[T]) -> T:
        try:
            return await pending
        except anthropic.AnthropicError as exc:
            raise self._classify(exc) from None

    async def _first_custom_id(self, batch: MessageBatch, *, until: float | None = None) -> str | None:
        """The custom_id of the first result of a batch (None when it has none to read); a running one is
        waited for up to the monotonic time ``until`` (None: not waited for, read as None)."""
        while batch.processing_status != "ended":
            if until is None:
                return None
            if time.monotonic() >= until:
                raise AdapterError(
                    f"batch {batch.id} (one request) is still running: it may be the marker of the batch looked "
                    f"for, which cannot be told until it ends (waited {self.marker_wait_s:.0f} s); try again later",
                    kind="timeout",
                    retryable=True,
                )
            await asyncio.sleep(self.poll_s)
            batch = await self._client.messages.batches.retrieve(batch.id)
        if batch.results_url is None:
            return None
        results = await self._client.messages.batches.results(batch.id)
        try:
            async for line in results:
                return line.custom_id
        finally:
            await results.close()
        return None

    async def _after_marker(
        self, newer: list[MessageBatch], size: int, tag: str, firsts: dict[str, str | None]
    ) -> str | None:
        """Among the batches created after the label's marker, the one the marker announced."""
        running = []
        for batch in (b for b in newer if _size(b) == size):
            if batch.processing_status != "ended":
                running.append(batch.id)
                continue
            first = firsts[batch.id] if batch.id in firsts else await self._first_custom_id(batch)
            if first is not None and first.endswith(f"-{tag}"):
                return batch.id
        if len(running) > 1:
            raise AdapterError(
                f"{len(running)} batches of {size} requests made after this label's marker are still running "
                f"({', '.join(running)}): which is this label's cannot be told until they end; try again later",
                kind="server",
                retryable=True,
            )
        return running[0] if running else None

    async def _completion(self, result: MessageBatchResult, request: ModelRequest) -> Completion:
        if result.type == "succeeded":
            _, image_sent = await asyncio.to_thread(self._build, request)  # what the image became, as live
            return self._read(result.message, request, image_sent).model_copy(update={"route": "batch"})
        if result.type == "errored":
            error = result.error.error
            kind = _ERROR_KINDS.get(error.type, "server")
            detail = redact(f"the batch's request errored: {error.type}: {error.message}", self._key)
            return _failed(request, kind, detail)
        if result.type == "expired":
            return _failed(request, "timeout", "the batch expired (24 h) before this request was answered")
        return _failed(request, "missing", "the batch was cancelled before this request was answered")
