"""OpenAI's Batch API (Files + Batches) for the OpenAI adapter: ``u2eval run --batch`` (``u2eval.run.batch``).

A batch is a JSONL file, one request a line: ``{"custom_id": <store key>, "method": "POST", "url":
"/v1/chat/completions", "body": <the live body>}``, the body spliced in as the very bytes ``encode_request``
makes for a live call. The file is uploaded with ``files.create(purpose="batch")``, the batch made with
``batches.create(input_file_id, endpoint, completion_window="24h", metadata={"u2eval": label})``; a batch
whose id a killed run never recorded is found again by that metadata in ``batches.list`` (newest first).
Each line of the output file is read by the same ``from_response`` as a live answer (usage included); a line
of the error file, a request a batch never answered (expired, cancelled, failed) and a response that is not a
chat completion become infra errors, asked again by the next run.

OpenAI's limits (the Batch guide, and the SDK's ``batches.create``): 50,000 requests and 200 MB a file. With
U2-Bench's images (~330 KB a line in base64) the bytes bind: about 600 cases a file.

Not an adapter (no ``create``), so it has no line in the ADAPTERS table.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

import openai

from model_adapters._wire import one_line
from model_adapters.openai_convert import classify, from_response
from u2eval.errors import AdapterError
from u2eval.models.protocol import BatchLimits, BatchState, BatchStatus, ModelRequest
from u2eval.records import Completion

ENDPOINT: Final = "/v1/chat/completions"
LIMITS = BatchLimits(max_requests=50_000, max_bytes=200_000_000)  # 200 MB, counted in decimal megabytes
METADATA_KEY = "u2eval"
UPLOAD_TIMEOUT_S = 900.0  # 200 MB at ~2 Mbit/s
MAX_LISTED = 2_000  # find_batch looks at this many of the newest batches (a killed run's is among the last made)

# OpenAI's batch statuses -> the protocol's states
_STATES: dict[str, BatchState] = {
    "validating": "in_progress",
    "in_progress": "in_progress",
    "finalizing": "in_progress",
    "cancelling": "in_progress",
    "completed": "ended",
    "expired": "expired",
    "failed": "failed",
    "cancelled": "cancelled",
}


def batch_line(key: str, body: bytes) -> bytes:
    """One line of a batch file (without its newline): the live body's bytes, keyed by the store key."""
    head = json.dumps({"custom_id": key, "method": "POST", "url": ENDPOINT}, separators=(",", ":"))
    return head[:-1].encode() + b',"body":' + body + b"}"


def batch_file(items: Sequence[bytes]) -> bytes:
    return b"".join(item + b"\n" for item in items)


class OpenAIBatches:
    """The Files and Batches endpoints of one OpenAI endpoint, through the SDK's client."""

    def __init__(self, client: openai.AsyncOpenAI, where: str, secret: str) -> None:
        self._client, self._where, self._secret = client, where, secret

    def _error(self, exc: openai.OpenAIError, what: str) -> AdapterError:
        return classify(exc, f"{self._where} ({what})", self._secret)

    async def submit(self, items: Sequence[bytes], label: str) -> str:
        try:
            uploaded = await self._client.files.create(
                file=(f"{label}.jsonl", batch_file(items), "application/jsonl"),
                purpose="batch",
                timeout=UPLOAD_TIMEOUT_S,
            )
        except openai.OpenAIError as exc:
            raise self._error(exc, "file upload") from None
        try:
            batch = await self._client.batches.create(
                input_file_id=uploaded.id,
                endpoint=ENDPOINT,
                completion_window="24h",
                metadata={METADATA_KEY: label},
            )
        except openai.OpenAIError as exc:
            raise self._error(exc, "batch create") from None
        return batch.id

    async def find(self, label: str) -> str | None:
        seen = 0
        try:
            async for batch in self._client.batches.list(limit=100):
                if (batch.metadata or {}).get(METADATA_KEY) == label:
                    return batch.id
                seen += 1
                if seen >= MAX_LISTED:
                    break
        except openai.OpenAIError as exc:
            raise self._error(exc, "batch list") from None
        return None

    async def status(self, batch_id: str) -> BatchStatus:
        try:
            batch = await self._client.batches.retrieve(batch_id)
        except openai.OpenAIError as exc:
            raise self._error(exc, "batch retrieve") from None
        counts = batch.request_counts
        errors = [f"{e.code}: {e.message}" for e in (batch.errors.data or [])] if batch.errors else []
        return BatchStatus(
            state=_STATES.get(batch.status, "in_progress"),
            done=counts.completed + counts.failed if counts is not None else None,
            total=counts.total if counts is not None else None,
            detail=one_line("; ".join(errors), 500) if errors else None,
        )

    async def _lines(self, file_id: str | None) -> dict[str, dict[str, Any]]:
        """custom_id -> its line, from an output or error file (none: no file)."""
        if not file_id:
            return {}
        try:
            content = await self._client.files.content(file_id)
        except openai.OpenAIError as exc:
            raise self._error(exc, "file content") from None
        lines: dict[str, dict[str, Any]] = {}
        for raw in content.content.splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue  # a torn line is the same as none: its request becomes an infra error
            if isinstance(line, dict) and isinstance(line.get("custom_id"), str):
                lines[line["custom_id"]] = line
        return lines

    async def results(self, batch_id: str, requests: Mapping[str, ModelRequest]) -> list[Completion]:
        try:
            batch = await self._client.batches.retrieve(batch_id)
        except openai.OpenAIError as exc:
            raise self._error(exc, "batch retrieve") from None
        lines = await self._lines(batch.error_file_id) | await self._lines(batch.output_file_id)
        errors = "; ".join(f"{e.code}: {e.message}" for e in (batch.errors.data or [])) if batch.errors else ""
        unanswered = _unanswered(batch.status, errors)
        return [_read(lines.get(key), request, unanswered) for key, request in requests.items()]


def _unanswered(status: str, errors: str) -> tuple[str, str]:
    """(error kind, message) for a request the batch has no line for."""
    if status == "expired":
        return "timeout", "the batch expired (24 h) before this request was answered"
    if status == "cancelled":
        return "server", "the batch was cancelled before this request was answered"
    if status == "failed":
        kind = "rate_limit" if "limit" in errors.lower() else "bad_request"
        return kind, f"the batch failed: {errors or 'no reason given'}"
    return "missing", f"the batch ({status}) has no result for this request"


def _failed(request: ModelRequest, kind: str, message: str) -> Completion:
    return Completion.model_validate(
        {"case_id": request.case.case_id, "key": request.key, "error": kind}
        | {"error_message": one_line(message, 500), "route": "batch"}
    )


def _status_kind(status: int) -> str:
    """An HTTP status of a failed item -> its error kind, as a live call's (``openai_convert.classify``)."""
    if status == 429:
        return "rate_limit"
    if status in (401, 403):
        return "auth"
    if status == 408:
        return "timeout"
    if status == 409 or status >= 500:
        return "server"
    return "bad_request"


def _read(line: dict[str, Any] | None, request: ModelRequest, unanswered: tuple[str, str]) -> Completion:
    """One line of the output or error file -> the request's Completion (a batch answer)."""
    if line is None:
        return _failed(request, *unanswered)
    response, error = line.get("response"), line.get("error")
    if isinstance(response, dict) and response.get("status_code") == 200:
        try:
            completion = from_response(response.get("body"), request)
        except AdapterError as exc:
            return _failed(request, exc.kind, f"batch answer: {exc}")
        return completion.model_copy(update={"route": "batch"})
    if isinstance(response, dict):
        status = response.get("status_code")
        body = response.get("body")
        said = body.get("error", {}).get("message") if isinstance(body, dict) else None
        kind = _status_kind(status) if isinstance(status, int) else "server"
        return _failed(request, kind, f"batch item HTTP {status}: {said or 'no message'}")
    if isinstance(error, dict):
        code, said = error.get("code"), error.get("message")
        kind = "timeout" if code == "batch_expired" else "server"
        return _failed(request, kind, f"batch item {code}: {said or 'no message'}")
    return _failed(request, "malformed", "the batch's line for this request has neither a response nor an error")
