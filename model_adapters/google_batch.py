"""The Gemini API's batch mode for the Google adapter (``u2eval run --batch``), with ``google-genai``.

The file route, because U2-Bench's images make inline requests hit the 20 MB limit of one create call:

1. ``batch_item``: one JSONL line ``{"key": <store key>, "request": <GenerateContentRequest>}``, where the
   request is the JSON a live ``generate_content`` call sends, made by the SDK's own converter and serialized
   as the SDK does (``json.dumps``), so the line holds the live body byte for byte.
2. ``submit_batch``: the lines, each with its newline (the file's size is the items' plus one byte each),
   uploaded as one file with ``files.upload`` (the resumable upload protocol:
   ``POST /upload/v1beta/files`` to start, then the bytes in 8 MB chunks to the URL it returns), then
   ``batches.create(model, src="files/…", config={"display_name": label})``:
   ``POST /v1beta/models/{model}:batchGenerateContent``, which answers a long-running operation named
   ``batches/…``: the batch id.
3. ``find_batch``: ``batches.list`` (``GET /v1beta/batches``, every page), ours by its display name.
4. ``batch_status``: ``batches.get`` (``GET /v1beta/batches/…``); the job states
   JOB_STATE_PENDING/RUNNING/SUCCEEDED/FAILED/CANCELLED/EXPIRED as a ``BatchStatus``. The SDK reads no
   per-request counts from the operation (``batchStats``), so ``done``/``total`` stay unknown.
5. ``batch_results``: the responses file (``dest.file_name``) fetched with ``files.download``
   (``GET /v1beta/files/…:download?alt=media``); each line ``{"key", "response"}`` read as a live answer
   (the SDK's converter, then ``from_response``: text, refusal, usage), each ``{"key", "error"}`` line, each
   key with no line and every key of a failed, expired or cancelled batch an infra error, never scored.

Limits (ai.google.dev/gemini-api/docs/batch-api, "Input file" and "Best practices"): an input file holds
at most 2 GB; no count of requests per batch is published, so the bytes bind. The enqueued-token quota of
the account's tier (rate-limits page, "Batch API") caps how much may wait at once and is not checked here.
Batch mode and the Files API are served under ``v1beta``: batch calls use it unless the preset names an
``api_version``. The SDK's retries stay off and every failure is classified as a live call's is.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from google import genai
from google.genai import _common, types
from google.genai import models as genai_models
from pydantic import ValidationError

from model_adapters._wire import backstop_timeout_s, redact
from model_adapters.google import FAILURES, GoogleAdapter, WireRequest, _name, classify, from_response, to_request
from u2eval.errors import AdapterError
from u2eval.models.protocol import AdapterOptions, BatchLimits, BatchState, BatchStatus, ModelRequest
from u2eval.records import Completion, ErrorKind

BATCH_API_VERSION = "v1beta"
MAX_FILE_BYTES = 2_000_000_000  # "The maximum allowed file size for an input file is 2GB" (read as 10^9 bytes)
MAX_REQUESTS = 1_000_000  # none published: a bound that the 2 GB binds long before with images
JSONL_MIME_TYPE = "jsonl"  # what Google's batch guide uploads its input files as

JOB_STATES: dict[str, BatchState] = {
    "JOB_STATE_QUEUED": "in_progress",
    "JOB_STATE_PENDING": "in_progress",
    "JOB_STATE_RUNNING": "in_progress",
    "JOB_STATE_PAUSED": "in_progress",
    "JOB_STATE_UPDATING": "in_progress",
    "JOB_STATE_CANCELLING": "in_progress",  # not cancelled until it says so
    "JOB_STATE_SUCCEEDED": "ended",
    "JOB_STATE_PARTIALLY_SUCCEEDED": "ended",
    "JOB_STATE_FAILED": "failed",
    "JOB_STATE_CANCELLED": "cancelled",
    "JOB_STATE_EXPIRED": "expired",
}
# What each unanswered request of a batch that ended so becomes (an infra error: the next run asks again).
_UNANSWERED: dict[BatchState, tuple[ErrorKind, str]] = {
    "expired": ("timeout", "the batch expired before answering (48 hours)"),
    "failed": ("server", "the batch failed"),
    "cancelled": ("missing", "the batch was cancelled"),
}


def _parameters(wire: WireRequest) -> types._GenerateContentParameters:
    return types._GenerateContentParameters(model=wire.model, contents=wire.contents, config=wire.config)


def live_body(api_client: Any, wire: WireRequest) -> dict[str, Any]:
    """The JSON body ``generate_content`` sends for ``wire``: the SDK's own steps (``_generate_content``)."""
    params = _parameters(wire)
    body = genai_models._GenerateContentParameters_to_mldev(api_client, params, None, params)
    body.pop("config", None)
    body = _common.encode_unserializable_types(_common.convert_to_dict(body))
    return {k: v for k, v in body.items() if not k.startswith("_")}  # _url, _query: the path, not the body


def batch_line(key: str, body: Mapping[str, Any]) -> bytes:
    """One line of the input file, without its newline. ``json.dumps`` as the SDK serializes a live body, so
    the request's bytes inside the line are the live ones."""
    return json.dumps({"key": key, "request": body}).encode("utf-8")


class JsonlItems(io.RawIOBase):
    """The items read as one JSONL file (each followed by a newline), without joining them in memory: a file
    may hold 2 GB. Seekable, as the SDK measures a stream's size by seeking to its end."""

    def __init__(self, items: Sequence[bytes]) -> None:
        super().__init__()
        self._items = items
        self._size = sum(len(item) + 1 for item in items)
        self._index = 0  # the line the position is in, and the position inside it (its newline at len(item))
        self._inside = 0
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence] + offset
        self._position = left = max(0, min(target, self._size))
        self._index = 0
        while self._index < len(self._items) and left > len(self._items[self._index]):
            left -= len(self._items[self._index]) + 1
            self._index += 1
        self._inside = left
        return self._position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view) and self._index < len(self._items):
            line = self._items[self._index]
            piece = line[self._inside : self._inside + len(view) - filled] if self._inside < len(line) else b"\n"
            view[filled : filled + len(piece)] = piece
            filled += len(piece)
            self._inside += len(piece)
            if self._inside > len(line):  # past its newline: the next line
                self._index, self._inside = self._index + 1, 0
        self._position += filled
        return filled


def _kind_of(code: object) -> ErrorKind:
    """An item's error (a google.rpc.Status with an HTTP code) as the kind a live call's would have."""
    if not isinstance(code, int):
        return "server"
    if code == 429:
        return "rate_limit"
    if code in (408, 504):
        return "timeout"
    if code >= 500:
        return "server"
    return "auth" if code in (401, 403) else "bad_request"


def read_lines(data: bytes) -> tuple[dict[str, dict[str, Any]], int]:
    """The responses file's lines by key, and how many lines could not be read (their keys are then missing)."""
    lines: dict[str, dict[str, Any]] = {}
    unreadable = 0
    for raw in data.splitlines():
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            unreadable += 1
            continue
        if isinstance(line, dict) and isinstance(line.get("key"), str):
            lines[line["key"]] = line
        else:
            unreadable += 1
    return lines, unreadable


class GoogleBatchAdapter(GoogleAdapter):
    """The Google adapter with the Gemini API's batch mode (``SupportsBatch``)."""

    def __init__(self, model: str, options: AdapterOptions) -> None:
        super().__init__(model, options)
        self._options = options
        self._batch_client: genai.Client | None = None

    @property
    def batch_limits(self) -> BatchLimits:
        return BatchLimits(max_requests=MAX_REQUESTS, max_bytes=MAX_FILE_BYTES)

    def _wire(self, request: ModelRequest) -> WireRequest:
        extra = self._extra
        try:
            return to_request(
                request.prompt,
                self._generation,
                self._model,
                extra.image_budget,
                thinking_budget=extra.thinking_budget,
            )
        except ValueError as exc:  # an image that cannot be read or fitted: as a live call would say
            raise AdapterError(str(exc), kind="bad_request", retryable=False) from exc

    def batch_item(self, request: ModelRequest) -> bytes:
        return batch_line(request.key, live_body(self._client._api_client, self._wire(request)))

    def _batches(self) -> genai.Client:
        """A client for batch and file calls: the live one's settings, under the API version batches live in."""
        if self._batch_client is None:
            http_options = types.HttpOptions(
                base_url=self._options.base_url,
                api_version=self._extra.api_version or BATCH_API_VERSION,
                timeout=round(backstop_timeout_s(self._options) * 1000),
                retry_options=types.HttpRetryOptions(attempts=1),
            )
            self._batch_client = genai.Client(vertexai=False, api_key=self._key, http_options=http_options)
        return self._batch_client

    async def submit_batch(self, items: Sequence[bytes], label: str) -> str:
        if not items:
            raise ValueError("a batch needs at least one item")
        client = self._batches().aio
        upload = types.UploadFileConfig(display_name=label, mime_type=JSONL_MIME_TYPE)
        try:
            uploaded = await client.files.upload(file=JsonlItems(items), config=upload)
        except FAILURES as exc:
            raise classify(exc, self._key) from None
        except (KeyError, ValueError) as exc:  # the SDK's words for an upload the server did not finish
            message = redact(f"file upload failed: {exc}", self._key)
            raise AdapterError(message, kind="malformed", retryable=True) from None
        if not uploaded.name:
            raise AdapterError("the file upload answered no file name", kind="malformed", retryable=True)
        try:
            job = await client.batches.create(model=self._model, src=uploaded.name, config={"display_name": label})
        except FAILURES as exc:
            raise classify(exc, self._key) from None
        if not job.name:
            raise AdapterError("batches.create answered no batch name", kind="malformed", retryable=True)
        return job.name

    async def find_batch(self, label: str) -> str | None:
        """The newest batch whose display name is ``label``, or None."""
        try:
            pager = await self._batches().aio.batches.list(config=types.ListBatchJobsConfig(page_size=100))
            found = [job async for job in pager if job.display_name == label and job.name]
        except FAILURES as exc:
            raise classify(exc, self._key) from None
        oldest = datetime.min.replace(tzinfo=timezone.utc)
        found.sort(key=lambda job: job.create_time or oldest)
        return found[-1].name if found else None

    async def _job(self, batch_id: str) -> tuple[types.BatchJob, str, BatchState]:
        try:
            job = await self._batches().aio.batches.get(name=batch_id)
        except FAILURES as exc:
            raise classify(exc, self._key) from None
        state = _name(job.state) or "JOB_STATE_UNSPECIFIED"
        return job, state, JOB_STATES.get(state, "in_progress")

    async def batch_status(self, batch_id: str) -> BatchStatus:
        job, state, mapped = await self._job(batch_id)
        detail = None
        if mapped not in ("ended", "in_progress") or state not in JOB_STATES:
            reason = job.error.message if job.error is not None and job.error.message else None
            detail = redact(f"{batch_id}: {state}" + (f": {reason}" if reason else ""), self._key)
        return BatchStatus(state=mapped, detail=detail)

    async def batch_results(self, batch_id: str, requests: Mapping[str, ModelRequest]) -> list[Completion]:
        job, state, mapped = await self._job(batch_id)
        if mapped == "in_progress":
            raise AdapterError(f"{batch_id} is {state}: nothing to collect yet", kind="bad_request", retryable=False)
        data = b""
        file_name = job.dest.file_name if job.dest is not None else None
        if mapped == "ended" and file_name:
            try:
                data = await self._batches().aio.files.download(file=file_name)
            except FAILURES as exc:
                raise classify(exc, self._key) from None
        why = _UNANSWERED.get(mapped, ("missing", "the batch ended without a responses file"))
        if mapped == "ended" and file_name:
            why = ("missing", "no answer for this request in the batch's responses file")
        return await asyncio.to_thread(self._read_results, data, requests, why)

    def _read_results(
        self, data: bytes, requests: Mapping[str, ModelRequest], unanswered: tuple[ErrorKind, str]
    ) -> list[Completion]:
        lines, unreadable = read_lines(data)
        kind, message = unanswered
        if unreadable:
            message += f" ({unreadable} unreadable lines in it)"
        return [self._completion(request, lines.get(key), kind, message) for key, request in requests.items()]

    def _completion(
        self, request: ModelRequest, line: dict[str, Any] | None, kind: ErrorKind, message: str
    ) -> Completion:
        common: dict[str, Any] = {"case_id": request.case.case_id, "key": request.key, "route": "batch"}
        if line is None:
            return Completion(**common, error=kind, error_message=message)
        error = line.get("error")
        if isinstance(error, dict) or not isinstance(line.get("response"), dict):
            error = error if isinstance(error, dict) else {"message": "a line with neither a response nor an error"}
            code, status = error.get("code"), error.get("status") or ""
            text = f"batch item: HTTP {code} {status}: {error.get('message')}" if code else f"batch item: {error}"
            return Completion(**common, error=_kind_of(code), error_message=redact(" ".join(text.split()), self._key))
        wire = self._wire(request)
        params = _parameters(wire)
        try:
            payload = genai_models._GenerateContentResponse_from_mldev(line["response"], None, params)
            response = types.GenerateContentResponse._from_response(response=payload, kwargs={})
        except (ValidationError, TypeError, ValueError) as exc:
            message = redact(f"unreadable batch response: {' '.join(str(exc).split())[:300]}", self._key)
            return Completion(**common, error="malformed", error_message=message)
        answer = from_response(response, case_id=request.case.case_id, key=request.key, image_sent=wire.image_sent)
        return answer.model_copy(update={"route": "batch"})

    async def aclose(self) -> None:
        if self._batch_client is not None:
            await self._batch_client.aio.aclose()
            self._batch_client.close()
        await super().aclose()
