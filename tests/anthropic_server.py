"""A local stand-in for the Anthropic Messages API, close enough at the wire that the real ``anthropic`` SDK
talks to it unchanged through its base URL.

- ``POST /v1/messages``; the key as ``x-api-key`` or ``Authorization: Bearer`` (SDK 2.x sends the latter);
  ``anthropic-version`` required.
- The answer is a real Message: ``id``, ``type: "message"``, ``role``, ``model``, ``content`` blocks,
  ``stop_reason``, ``stop_sequence``, ``usage``; every response has a ``request-id`` header.
- What the real API refuses, it refuses: sampling parameters on API version 2026-10-21, an image whose
  bytes are not its ``media_type``, over 5 MB of base64, or over ``max_image_edge`` pixels; an unknown model
  (404 ``not_found_error``) when ``known_models`` is set.
- Errors are ``{"type": "error", "error": {"type": ..., "message": ...}, "request_id": ...}``; faults come
  from :mod:`wire_server` (429 with Retry-After, 500, 503, 529 overloaded, hang, malformed, empty, refusal,
  dropped connection, 400, 401, 404).
- The Message Batches API: ``POST /v1/messages/batches`` (at most ``max_batch_requests`` requests and
  ``max_batch_bytes`` of body, custom_ids of 1-64 ``[A-Za-z0-9_-]``, each unique), ``GET .../{id}``,
  ``GET /v1/messages/batches`` (newest first; ``limit``, ``after_id``, ``before_id``; ``has_more``,
  ``first_id``, ``last_id``), ``GET .../{id}/results`` (JSONL, in reverse order of the requests: results
  are matched by custom_id), ``POST .../{id}/cancel``. A batch ends after ``batch_polls`` retrieves of it (0:
  at once); each of its requests is then answered as ``POST /v1/messages`` would answer it (the same
  validation, the same scripted faults, the same Message), unless ``item_outcomes`` says otherwise for the
  custom_ids starting with a prefix (``expired``, ``canceled``, ``errored``); a cancelled batch ends at its
  next retrieve, its requests canceled. Faults at the batch endpoints: ``batch_faults`` (429, 500, 529
  overloaded, a dropped connection, or ``lost_reply``: the action done, then the connection dropped).
"""

from __future__ import annotations

import base64
import binascii
import io
import itertools
import json
import re
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from PIL import Image
from wire_server import Fault, Recorded, Reply, WireServer

NEW_API_VERSION = "2026-10-21"
MAX_BASE64_BYTES = 5 * 1024 * 1024
BATCHES = "/v1/messages/batches"
CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ids = itertools.count(1)

BatchEndpoint = Literal["create", "retrieve", "list", "results", "cancel"]


@dataclass
class BatchFault:
    endpoint: BatchEndpoint
    kind: Literal["rate_limit", "server_error", "overloaded", "drop", "lost_reply"]
    times: int = 1
    after: int = 0  # calls of the endpoint let through first


@dataclass
class StoredBatch:
    id: str
    created_at: float
    requests: list[dict[str, Any]]
    headers: dict[str, str]  # the create's: its requests are answered as if each had been sent with them
    body_bytes: int
    polls_left: int
    status: str = "in_progress"
    cancelled_at: float | None = None
    ended_at: float | None = None
    archived: bool = False
    results: list[dict[str, Any]] = field(default_factory=list)


_FAULTS: dict[str, tuple[int, str, str]] = {
    "rate_limit": (429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
    "server_error": (500, "api_error", "Internal server error"),
    "unavailable": (503, "api_error", "Service unavailable"),
    "overloaded": (529, "overloaded_error", "Overloaded"),
    "bad_request": (400, "invalid_request_error", "messages.0.content.0: invalid content block"),
    "auth": (401, "authentication_error", "invalid x-api-key"),
}


def error_reply(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    request_id = f"req_{next(_ids):06d}"
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}
    return Reply(status, json.dumps(body).encode(), {"request-id": request_id, **(headers or {})})


def image_blocks(body: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            blocks.extend(b for b in content if isinstance(b, dict) and b.get("type") == "image")
    return blocks


_TOKEN = re.compile(r"\w+|[^\w\s]")  # words and marks: about as many as a BPE tokenizer finds in English


def billed_input_tokens(body: dict[str, Any]) -> int:
    """The input tokens Anthropic bills a Messages request, as the stand-in reckons them: every word and mark of the
    system and user text, 4 tokens a message, and each image by Anthropic's rule (fitted within a 1568-pixel long
    edge and 1.15 megapixels, then width x height / 750), at the image's real size."""
    tokens = len(_TOKEN.findall(str(body.get("system") or "")))
    for message in body.get("messages", []):
        tokens += 4
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for block in blocks:
            if block.get("type") == "text":
                tokens += len(_TOKEN.findall(block.get("text") or ""))
    for _, data in sent_images(body):
        try:
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
        except OSError:
            continue
        scale = min(1.0, 1568 / max(width, height), (1_150_000 / (width * height)) ** 0.5)
        tokens += -(-int(width * scale) * int(height * scale) // 750)
    return tokens


def sent_images(body: dict[str, Any]) -> list[tuple[str, bytes]]:
    """(media_type, decoded bytes) of every image block of a request body."""
    return [
        (b["source"]["media_type"], base64.b64decode(b["source"]["data"], validate=True)) for b in image_blocks(body)
    ]


class AnthropicServer(WireServer):
    name = "anthropic"
    recorded_headers = ("anthropic-version", "x-stainless-retry-count")

    def __init__(
        self, key: str, *, known_models: set[str] | None = None, max_image_edge: int = 8000, hang_s: float = 3.0
    ) -> None:
        super().__init__(key, hang_s=hang_s)
        self.known_models = known_models
        self.max_image_edge = max_image_edge
        self.batches: dict[str, StoredBatch] = {}  # in the order they were created
        self.batch_calls: list[tuple[BatchEndpoint, str | None]] = []
        self.batch_faults: list[BatchFault] = []
        self.batch_polls = 0
        self.item_outcomes: dict[str, str] = {}
        self.max_batch_requests = 100_000
        self.max_batch_bytes = 256_000_000
        self._last_created = 0.0

    def start(self) -> AnthropicServer:
        super().start()
        # A reply leaves in two writes (headers, then body): without this every one waits out the client's
        # delayed ACK (~40 ms), which a batch's many small calls add up. Accepted sockets inherit it (Linux).
        assert self._server is not None
        self._server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self

    def route(self, method: str, path: str) -> str | None:
        return "" if method == "POST" and path == "/v1/messages" else None

    def authorized(self, headers: dict[str, str], query: dict[str, list[str]]) -> bool:
        return headers.get("x-api-key") == self.key or headers.get("authorization") == f"Bearer {self.key}"

    def unauthorized(self) -> Reply:
        return error_reply(401, "authentication_error", "invalid x-api-key")

    def not_found(self, path: str) -> Reply:
        return error_reply(404, "not_found_error", f"Not Found: {path}")

    def has_image(self, body: dict[str, Any]) -> bool:
        return bool(image_blocks(body))

    def validate(self, model: str, headers: dict[str, str], body: dict[str, Any]) -> Reply | None:
        version = headers.get("anthropic-version")
        if not version:
            return error_reply(400, "invalid_request_error", "anthropic-version: header is required")
        for name in ("model", "max_tokens", "messages"):
            if name not in body:
                return error_reply(400, "invalid_request_error", f"{name}: Field required")
        if version == NEW_API_VERSION:
            for name in ("temperature", "top_p", "top_k"):
                if name in body:
                    return error_reply(400, "invalid_request_error", f"{name}: Extra inputs are not permitted")
        if self.known_models is not None and body["model"] not in self.known_models:
            return error_reply(404, "not_found_error", f"model: {body['model']}")
        for index, block in enumerate(image_blocks(body)):
            problem = self._image_problem(block)
            if problem:
                return error_reply(400, "invalid_request_error", f"messages.0.content.{index}.image.source: {problem}")
        return None

    def _image_problem(self, block: dict[str, Any]) -> str | None:
        source = block.get("source", {})
        data = source.get("data", "")
        if len(data) > MAX_BASE64_BYTES:
            return f"image exceeds 5 MB maximum: {len(data)} bytes > {MAX_BASE64_BYTES} bytes"
        try:
            raw = base64.b64decode(data, validate=True)
            with Image.open(io.BytesIO(raw)) as img:
                fmt, size = img.format, img.size
        except (binascii.Error, OSError) as exc:
            return f"invalid image data: {exc}"
        if f"image/{(fmt or '').lower()}" != source.get("media_type"):
            return "Image does not match the provided media type"
        if max(size) > self.max_image_edge:
            return f"At least one of the image dimensions exceed max allowed size: {self.max_image_edge} pixels"
        return None

    def ok(self, model: str, body: dict[str, Any], text: str) -> dict[str, Any]:
        return self._message(body, [{"type": "text", "text": text}], "end_turn", output_tokens=max(1, len(text) // 4))

    def _message(
        self, body: dict[str, Any], content: list[dict[str, Any]], stop_reason: str, output_tokens: int
    ) -> dict[str, Any]:
        return {
            "id": f"msg_{next(_ids):08d}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": billed_input_tokens(body), "output_tokens": output_tokens},
        }

    def fault_reply(self, fault: Fault, model: str, body: dict[str, Any]) -> Reply:
        if fault.kind == "empty":
            return Reply(200, json.dumps(self._message(body, [], "end_turn", 1)).encode())
        if fault.kind in ("refusal", "refusal_finish"):
            return Reply(200, json.dumps(self._message(body, [], "refusal", 3)).encode())
        if fault.kind == "not_found":
            return error_reply(404, "not_found_error", f"model: {body.get('model')}")
        status, kind, message = _FAULTS[fault.kind]
        return error_reply(status, kind, message, fault.retry_headers())

    # -- the Message Batches API ---------------------------------------------------------------------

    def handle(self, handler: BaseHTTPRequestHandler) -> Reply | None:
        parts = urlsplit(handler.path)
        if not parts.path.startswith(BATCHES):
            return super().handle(handler)
        length = int(handler.headers.get("content-length") or 0)
        raw = handler.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in handler.headers.items()}
        if not self.authorized(headers, {}):
            return self.unauthorized()
        if not headers.get("anthropic-version"):
            return error_reply(400, "invalid_request_error", "anthropic-version: header is required")
        rest = parts.path[len(BATCHES) :].strip("/").split("/") if parts.path != BATCHES else []
        endpoint = _batch_endpoint(handler.command, rest)
        if endpoint is None:
            return self.not_found(parts.path)
        batch_id = rest[0] if rest else None
        with self._lock:
            self.batch_calls.append((endpoint, batch_id))
            fault = next((f for f in self.batch_faults if f.endpoint == endpoint and f.times > 0), None)
            if fault is not None and fault.after > 0:
                fault.after, fault = fault.after - 1, None
            elif fault is not None:
                fault.times -= 1
        if fault is not None and fault.kind != "lost_reply":
            if fault.kind == "drop":
                return None
            status, kind, message = _FAULTS[fault.kind]
            return error_reply(status, kind, message)
        if batch_id is not None and batch_id not in self.batches:
            return error_reply(404, "not_found_error", f"batch {batch_id} not found")
        if endpoint == "create":
            reply = self._create_batch(raw, headers)
        elif endpoint == "list":
            reply = self._list_batches(parse_qs(parts.query))
        else:
            assert batch_id is not None
            reply = getattr(self, f"_{endpoint}_batch")(self.batches[batch_id])
        return None if fault is not None else reply  # lost_reply: done, and the answer never arrives

    def _create_batch(self, raw: bytes, headers: dict[str, str]) -> Reply:
        if len(raw) > self.max_batch_bytes:
            return error_reply(413, "request_too_large", f"batch body of {len(raw)} bytes > {self.max_batch_bytes}")
        requests = json.loads(raw).get("requests")
        if not isinstance(requests, list) or not 0 < len(requests) <= self.max_batch_requests:
            return error_reply(400, "invalid_request_error", f"requests: 1 to {self.max_batch_requests} items")
        custom_ids = [r.get("custom_id") for r in requests]
        for index, (custom_id, request) in enumerate(zip(custom_ids, requests, strict=True)):
            if not isinstance(custom_id, str) or not CUSTOM_ID.fullmatch(custom_id):
                return error_reply(400, "invalid_request_error", f"requests.{index}.custom_id: {custom_id!r}")
            missing = [name for name in ("model", "max_tokens", "messages") if name not in request.get("params", {})]
            if missing:
                return error_reply(400, "invalid_request_error", f"requests.{index}.params.{missing[0]}: required")
        if len(set(custom_ids)) != len(custom_ids):
            return error_reply(400, "invalid_request_error", "requests: custom_id values must be unique")
        with self._lock:
            created = self._last_created = max(time.time(), self._last_created + 0.001)
            batch = StoredBatch(f"msgbatch_{next(_ids):08d}", created, requests, headers, len(raw), self.batch_polls)
            self.batches[batch.id] = batch
        if batch.polls_left <= 0:
            self._end(batch)
        return self._batch_reply(batch)

    def _retrieve_batch(self, batch: StoredBatch) -> Reply:
        batch.polls_left -= 1
        if batch.status == "canceling" or (batch.status == "in_progress" and batch.polls_left <= 0):
            self._end(batch)
        return self._batch_reply(batch)

    def _cancel_batch(self, batch: StoredBatch) -> Reply:
        if batch.status == "in_progress":
            batch.status, batch.cancelled_at = "canceling", time.time()
        return self._batch_reply(batch)

    def _results_batch(self, batch: StoredBatch) -> Reply:
        if batch.status != "ended" or batch.archived:
            return error_reply(404, "not_found_error", f"batch {batch.id} has no results")
        lines = [json.dumps(r) + "\n" for r in reversed(batch.results)]
        return Reply(200, "".join(lines).encode())

    def _list_batches(self, query: dict[str, list[str]]) -> Reply:
        newest_first = list(reversed(self.batches.values()))
        ids = [b.id for b in newest_first]
        limit = int(query.get("limit", ["20"])[0])
        if not 1 <= limit <= 1000:
            return error_reply(400, "invalid_request_error", "limit: 1 to 1000")
        if "after_id" in query:
            start = ids.index(query["after_id"][0]) + 1
            page, more = newest_first[start : start + limit], start + limit < len(ids)
        elif "before_id" in query:
            end = ids.index(query["before_id"][0])
            page, more = newest_first[max(0, end - limit) : end], end - limit > 0
        else:
            page, more = newest_first[:limit], limit < len(ids)
        data = [self._batch_json(b) for b in page]
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        body = {"data": data, "has_more": more, "first_id": first, "last_id": last}
        return Reply(200, json.dumps(body).encode())

    def archive(self, batch_id: str) -> None:
        """The batch's results are gone, as they are 29 days after its creation."""
        self.batches[batch_id].archived = True

    def _end(self, batch: StoredBatch) -> None:
        cancelled = batch.status == "canceling"
        batch.results = [
            {"custom_id": r["custom_id"], "result": self._item_result(r, batch.headers, cancelled)}
            for r in batch.requests
        ]
        batch.status, batch.ended_at = "ended", time.time()

    def _item_result(self, request: dict[str, Any], headers: dict[str, str], cancelled: bool) -> dict[str, Any]:
        """A request of a batch, answered as ``POST /v1/messages`` would answer it."""
        outcome = next((o for prefix, o in self.item_outcomes.items() if request["custom_id"].startswith(prefix)), None)
        if cancelled or outcome in ("expired", "canceled"):
            return {"type": "expired" if outcome == "expired" else "canceled"}
        if outcome == "errored":
            return {"type": "errored", "error": json.loads(error_reply(500, "api_error", "Internal server error").body)}
        params = request["params"]
        refused = self.validate(params["model"], headers, params)
        fault = None if refused is not None else self._take_fault(params)
        with self._lock:
            kind = fault.kind if fault else (f"refused-{refused.status}" if refused else None)
            self.requests.append(self._recorded(request["custom_id"], headers, params, kind))
        if refused is None and fault is None:
            return {"type": "succeeded", "message": self.ok(params["model"], params, self.answer(params))}
        reply = refused or self.fault_reply(fault, params["model"], params)  # type: ignore[arg-type]
        if reply.status == 200:
            return {"type": "succeeded", "message": json.loads(reply.body)}
        return {"type": "errored", "error": json.loads(reply.body)}

    def _recorded(self, custom_id: str, headers: dict[str, str], params: dict[str, Any], fault: str | None) -> Recorded:
        kept = {h: headers[h] for h in self.recorded_headers if h in headers}
        return Recorded(f"{BATCHES}#{custom_id}", kept, params, time.monotonic(), fault)

    def _batch_reply(self, batch: StoredBatch) -> Reply:
        return Reply(200, json.dumps(self._batch_json(batch)).encode())

    def _batch_json(self, batch: StoredBatch) -> dict[str, Any]:
        counts = dict.fromkeys(("processing", "succeeded", "errored", "canceled", "expired"), 0)
        if batch.status == "ended":
            for result in batch.results:
                counts[result["result"]["type"]] += 1
        else:
            counts["processing"] = len(batch.requests)
        readable = batch.status == "ended" and not batch.archived
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": batch.status,
            "request_counts": counts,
            "created_at": _iso(batch.created_at),
            "expires_at": _iso(batch.created_at + 86400),
            "ended_at": _iso(batch.ended_at),
            "cancel_initiated_at": _iso(batch.cancelled_at),
            "archived_at": _iso(batch.created_at + 29 * 86400) if batch.archived else None,
            "results_url": f"{self.url}{BATCHES}/{batch.id}/results" if readable else None,
        }


def _batch_endpoint(method: str, rest: list[str]) -> BatchEndpoint | None:
    """Which endpoint of the Message Batches API a method and the path after /v1/messages/batches name."""
    if not rest:
        return "create" if method == "POST" else "list"
    if len(rest) == 1:
        return "retrieve" if method == "GET" else None
    if len(rest) == 2 and (method, rest[1]) in (("GET", "results"), ("POST", "cancel")):
        return "results" if method == "GET" else "cancel"
    return None


def _iso(moment: float | None) -> str | None:
    return None if moment is None else datetime.fromtimestamp(moment, timezone.utc).isoformat().replace("+00:00", "Z")
