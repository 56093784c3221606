"""The OpenAI stand-in's Batch API (tests/openai_server.py serves it): ``/v1/files`` and ``/v1/batches`` as
OpenAI speaks them, so the real ``openai`` SDK drives them unchanged.

- ``POST /v1/files`` (multipart: ``file``, ``purpose``), ``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``;
- ``POST /v1/batches`` (``input_file_id``, ``endpoint``, ``completion_window``, ``metadata``), ``GET
  /v1/batches/{id}``, ``GET /v1/batches`` (newest first, ``limit`` and ``after``, ``has_more``), ``POST
  /v1/batches/{id}/cancel``.

A batch is made ``validating``; each retrieve moves it on: ``in_progress`` for ``polls`` retrieves (0: none),
then it ends as its fate says (:class:`BatchFate`, one taken per batch made by ``fate``, else completed):
``completed`` (every item answered), ``expired`` or ``cancelled`` (the first ``answered`` items answered, the
rest in the error file as ``batch_expired`` / ``batch_cancelled``), or ``failed`` (no output: the batch's
``errors``). An input file OpenAI would refuse (a line that is not a request to the batch's endpoint, a
``custom_id`` twice, two models, more than 50,000 lines or 200 MB) fails the batch the same way. Each item is
answered as the chat endpoint would answer its body: its checks, its answers and usage, and its faults
(``OpenAIServer.add_fault`` and the fault plan), an error status going to the error file. Faults of the batch
API itself: ``add_fault(endpoint, fault)`` for ``upload``, ``create``, ``retrieve``, ``list``, ``content``; with
``after=True`` the upload or batch is made and then the answer fails (an answer lost on its way back).

What a test reads: ``created`` (batches made), ``submitted`` (custom_id -> how many batches held it),
``input_lines()`` (every line of every batch's input file, as bytes).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web

if TYPE_CHECKING:
    from openai_server import Fault, OpenAIServer

ENDPOINTS = ("/v1/chat/completions",)
MAX_LINES = 50_000
MAX_BYTES = 200_000_000
Endpoint = Literal["upload", "create", "retrieve", "list", "content"]
# how an item a batch never ran is told in its error file
_UNDONE = {
    "expired": ("batch_expired", "could not be executed before the completion window expired"),
    "cancelled": ("batch_cancelled", "was cancelled before it was executed"),
}


@dataclass
class BatchFate:
    status: Literal["completed", "expired", "failed", "cancelled"] = "completed"
    answered: int = 0  # expired / cancelled: how many of the first items were answered before it
    polls: int | None = None  # retrieves that say in_progress (None: the server's ``polls``)
    error: str = "token_limit_exceeded: Enqueued token limit reached for gpt-4o in organization org-stand-in."


@dataclass
class _File:
    id: str
    purpose: str
    filename: str
    data: bytes
    created_at: int

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


@dataclass
class _Batch:
    id: str
    input_file_id: str
    endpoint: str
    metadata: dict[str, str] | None
    fate: BatchFate
    polls_left: int
    created_at: int
    status: str = "validating"
    invalid: str | None = None  # why its input file would be refused
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})
    errors: list[dict[str, Any]] = field(default_factory=list)
    times: dict[str, int] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        stamps = ("in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled")
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "expires_at": self.created_at + 86_400,
            "request_counts": dict(self.counts),
            "metadata": self.metadata,
        } | {f"{name}_at": self.times.get(name) for name in stamps}


@dataclass
class _Rule:
    endpoint: Endpoint
    fault: Fault
    remaining: int
    after: bool


Handler = Callable[[web.Request], Awaitable[web.Response]]


def _quiet(handler: Handler) -> Handler:
    """A handler whose client may go away mid-request (a killed run): nothing is made, nothing is logged."""

    async def handle(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except ConnectionResetError:
            return web.Response(status=499)

    return handle


def _error(status: int, message: str, code: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    return web.json_response(body, status=status)


class BatchAPI:
    """The Files and Batches endpoints of one ``OpenAIServer``; its chat answers and faults serve the items."""

    def __init__(self, server: OpenAIServer) -> None:
        self.server = server
        self.reset()

    def reset(self, polls: int = 0, latency_s: float = 0.0) -> None:
        self.files: dict[str, _File] = {}
        self.batches: dict[str, _Batch] = {}  # in order made
        self.polls = polls  # retrieves that say in_progress before a batch ends
        self.latency_s = latency_s  # every call of the batch API waits this long first
        self.fates: list[BatchFate] = []
        self.rules: list[_Rule] = []
        self.created = 0
        self.retrieves = 0  # batch retrieves answered (polls and collections)
        self.submitted: Counter[str] = Counter()
        self._ids = itertools.count(1)

    # -- what a test asks for ----------------------------------------------------------------------------

    def fate(self, fate: BatchFate, times: int = 1) -> None:
        """The next ``times`` batches made end this way."""
        self.fates.extend([fate] * times)

    def add_fault(self, endpoint: Endpoint, fault: Fault, *, times: int = 1, after: bool = False) -> None:
        self.rules.append(_Rule(endpoint, fault, times, after))

    def input_lines(self) -> list[bytes]:
        """Every line of every batch's input file, in the order the batches were made."""
        return [line for b in self.batches.values() for line in self.files[b.input_file_id].data.splitlines()]

    def stats(self) -> dict[str, Any]:
        repeated = sum(1 for n in self.submitted.values() if n > 1)
        return {"created": self.created, "files": len(self.files), "items": sum(self.submitted.values())} | {
            "items_repeated": repeated,
            "open": sum(1 for b in self.batches.values() if b.status in ("validating", "in_progress")),
            "retrieves": self.retrieves,
        }

    # -- the wire ----------------------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/files", _quiet(self._upload))
        app.router.add_get("/v1/files/{id}", _quiet(self._file))
        app.router.add_get("/v1/files/{id}/content", _quiet(self._content))
        app.router.add_post("/v1/batches", _quiet(self._create))
        app.router.add_get("/v1/batches", _quiet(self._list))
        app.router.add_get("/v1/batches/{id}", _quiet(self._retrieve))
        app.router.add_post("/v1/batches/{id}/cancel", _quiet(self._cancel))

    def _id(self, prefix: str) -> str:
        return f"{prefix}-stand-in-{next(self._ids)}"

    async def _enter(self, request: web.Request, endpoint: Endpoint | None) -> tuple[web.Response | None, _Rule | None]:
        """Auth, latency and the endpoint's next fault: (an answer to give instead, a fault to give after)."""
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        denied = self.server._authorised(request)
        if denied is not None:
            return denied, None
        rule = next((r for r in self.rules if r.endpoint == endpoint and r.remaining > 0), None)
        if rule is None:
            return None, None
        rule.remaining -= 1
        if rule.after:
            return None, rule
        return await self._faulted(request, rule.fault), None

    async def _faulted(self, request: web.Request, fault: Fault) -> web.Response:
        from openai_server import _ERRORS

        if fault.kind == "drop":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=200)
        if fault.kind == "hang":
            await asyncio.sleep(fault.hang_s)
        status, message, _, code = _ERRORS.get(fault.kind, _ERRORS["server_error"])
        headers = {"retry-after": f"{fault.retry_after_s:g}"} if fault.retry_after_s is not None else {}
        response = _error(status, message, code)
        response.headers.update(headers)
        return response

    async def _upload(self, request: web.Request) -> web.Response:
        denied, after = await self._enter(request, "upload")
        if denied is not None:
            await request.read()
            return denied
        form = await request.post()  # multipart/form-data: the file and its purpose
        purpose, upload = form.get("purpose"), form.get("file")
        if not isinstance(purpose, str) or not isinstance(upload, web.FileField):
            return _error(400, "Missing required parameter: 'file' or 'purpose'.")
        filename, data = upload.filename, upload.file.read()
        made = _File(self._id("file"), purpose, filename, data, int(time.time()))
        self.files[made.id] = made
        if after is not None:
            return await self._faulted(request, after.fault)
        return web.json_response(made.json())

    async def _file(self, request: web.Request) -> web.Response:
        denied, _ = await self._enter(request, None)
        if denied is not None:
            return denied
        found = self.files.get(request.match_info["id"])
        return web.json_response(found.json()) if found else _error(404, "No such File object.")

    async def _content(self, request: web.Request) -> web.Response:
        denied, _ = await self._enter(request, "content")
        if denied is not None:
            return denied
        found = self.files.get(request.match_info["id"])
        if found is None:
            return _error(404, "No such File object.")
        return web.Response(body=found.data, content_type="application/octet-stream")

    async def _create(self, request: web.Request) -> web.Response:
        denied, after = await self._enter(request, "create")
        if denied is not None:
            return denied
        params = await request.json()
        source = self.files.get(params.get("input_file_id", ""))
        if source is None:
            return _error(400, f"Invalid 'input_file_id': {params.get('input_file_id')!r}.")
        if source.purpose != "batch":
            return _error(400, "The input file must be uploaded with purpose 'batch'.")
        if params.get("endpoint") not in ENDPOINTS or params.get("completion_window") != "24h":
            return _error(400, "Invalid 'endpoint' or 'completion_window'.")
        fate = self.fates.pop(0) if self.fates else BatchFate()
        polls = self.polls if fate.polls is None else fate.polls
        batch = _Batch(
            self._id("batch"), source.id, params["endpoint"], params.get("metadata"), fate, polls, int(time.time())
        )
        batch.invalid, custom_ids = _check(source.data, batch.endpoint)
        batch.counts["total"] = len(custom_ids)
        self.batches[batch.id] = batch
        self.created += 1
        self.submitted.update(custom_ids)
        if after is not None:
            return await self._faulted(request, after.fault)
        return web.json_response(batch.json())

    async def _list(self, request: web.Request) -> web.Response:
        denied, _ = await self._enter(request, "list")
        if denied is not None:
            return denied
        newest = list(reversed(self.batches.values()))
        after = request.query.get("after")
        if after is not None:
            ids = [b.id for b in newest]
            newest = newest[ids.index(after) + 1 :] if after in ids else []
        limit = int(request.query.get("limit", "20"))
        page = newest[:limit]
        return web.json_response(
            {
                "object": "list",
                "data": [b.json() for b in page],
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": len(newest) > limit,
            }
        )

    async def _retrieve(self, request: web.Request) -> web.Response:
        denied, _ = await self._enter(request, "retrieve")
        if denied is not None:
            return denied
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _error(404, "No such Batch object.")
        self.retrieves += 1
        self._advance(batch)
        return web.json_response(batch.json())

    async def _cancel(self, request: web.Request) -> web.Response:
        denied, _ = await self._enter(request, None)
        if denied is not None:
            return denied
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _error(404, "No such Batch object.")
        if batch.status in ("validating", "in_progress"):
            batch.status, batch.fate = "cancelling", BatchFate("cancelled", answered=0)
            batch.times["cancelling"] = int(time.time())
        return web.json_response(batch.json())

    # -- a batch's life ----------------------------------------------------------------------------------

    def _advance(self, batch: _Batch) -> None:
        now = int(time.time())
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return
        if batch.invalid is not None:
            batch.status, batch.times["failed"] = "failed", now
            batch.errors = [{"code": "invalid_request", "message": batch.invalid, "param": None, "line": None}]
            return
        if batch.polls_left > 0 and batch.status != "cancelling":
            batch.polls_left -= 1
            batch.status = "in_progress"
            batch.times.setdefault("in_progress", now)
            return
        self._finish(batch, now)

    def _finish(self, batch: _Batch, now: int) -> None:
        fate = batch.fate
        if fate.status == "failed":
            code, _, message = fate.error.partition(": ")
            batch.status, batch.times["failed"] = "failed", now
            batch.errors = [{"code": code, "message": message, "param": None, "line": None}]
            return
        outputs, errors = [], []
        for index, raw in enumerate(self.files[batch.input_file_id].data.splitlines()):
            line = json.loads(raw)
            done = fate.status == "completed" or index < fate.answered
            if not done:
                code, words = _UNDONE[fate.status]
                error = {"code": code, "message": f"This request {words}."}
                errors.append(
                    {"id": self._id("batch_req"), "custom_id": line["custom_id"], "response": None, "error": error}
                )
                continue
            status, body = self.server.batch_answer(line["body"])
            response = {"status_code": status, "request_id": self._id("req"), "body": body}
            record = {"id": self._id("batch_req"), "custom_id": line["custom_id"], "response": response, "error": None}
            (outputs if status == 200 else errors).append(record)
        batch.counts |= {"completed": len(outputs), "failed": len(errors)}
        for records, attribute in ((outputs, "output_file_id"), (errors, "error_file_id")):
            if records:
                data = "".join(json.dumps(r) + "\n" for r in records).encode()
                made = _File(self._id("file"), "batch_output", f"{batch.id}_{attribute}.jsonl", data, now)
                self.files[made.id] = made
                setattr(batch, attribute, made.id)
        batch.status = {"completed": "completed", "expired": "expired", "cancelled": "cancelled"}[fate.status]
        batch.times["finalizing"] = batch.times[batch.status] = now


def _check(data: bytes, endpoint: str) -> tuple[str | None, list[str]]:
    """Why OpenAI would refuse this input file (None: it would not), and its custom_ids."""
    lines = data.splitlines()
    custom_ids: list[str] = []
    models: set[str] = set()
    if len(data) > MAX_BYTES or len(lines) > MAX_LINES:
        return f"The input file has {len(lines)} lines and {len(data)} bytes: at most {MAX_LINES} and {MAX_BYTES}.", []
    for number, raw in enumerate(lines, start=1):
        try:
            line = json.loads(raw)
        except ValueError:
            return f"Line {number} is not valid JSON.", custom_ids
        if not isinstance(line.get("custom_id"), str) or line.get("method") != "POST" or line.get("url") != endpoint:
            return f"Line {number}: a request needs a custom_id, method POST and url {endpoint}.", custom_ids
        if not isinstance(line.get("body"), dict):
            return f"Line {number}: the body is not an object.", custom_ids
        custom_ids.append(line["custom_id"])
        models.add(str(line["body"].get("model")))
    if len(set(custom_ids)) != len(custom_ids):
        return "The input file holds a custom_id twice.", custom_ids
    if len(models) > 1:
        return "The input file asks more than one model.", custom_ids
    return None, custom_ids
