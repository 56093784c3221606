"""A local stand-in for the Gemini API (generativelanguage), close enough at the wire that the real
``google-genai`` SDK talks to it unchanged through ``HttpOptions(base_url=...)``.

- ``POST /v1beta/models/{model}:generateContent`` (or ``/v1/``, the SDK's default since 2.x); the key as
  ``x-goog-api-key`` or ``?key=``.
- The answer is a real GenerateContentResponse: ``candidates[].content.parts[].text``, ``finishReason``,
  ``safetyRatings``, ``usageMetadata``, ``modelVersion``, ``responseId``.
- Refusals as the API gives them: ``promptFeedback.blockReason`` with no candidates (``refusal``), or a
  candidate stopped with ``finishReason: SAFETY`` and no content (``refusal_finish``).
- Errors are ``{"error": {"code", "message", "status", "details"}}``. A wrong key is what the real API
  answers: HTTP 400 INVALID_ARGUMENT with an ``ErrorInfo`` reason ``API_KEY_INVALID``. A 429 carries
  ``RetryInfo.retryDelay`` in its details (and Retry-After when the fault gives one).

Batch mode, as ``google-genai`` speaks it (its batches.py, files.py and _api_client.py):
- Files: the resumable upload (``POST /upload/{v}/files``, ``X-Goog-Upload-Command: start``, answered with
  ``x-goog-upload-url``; the bytes in chunks there, ``upload[, finalize]`` at ``X-Goog-Upload-Offset``, the
  upload id as credential), over ``max_file_bytes`` (2 GB) refused; ``GET /{v}/files/{id}:download``.
- Batches: ``POST /{v}/models/{model}:batchGenerateContent`` answers an operation ``batches/…`` (``metadata``:
  GenerateContentBatch); ``GET /{v}/batches/{id}``, ``GET /{v}/batches`` (paged), ``POST …:cancel``. A job
  runs for ``batch_polls`` GETs, then ends as ``batch_outcomes`` says (succeeded; failed, expired, cancelled),
  each input line answered as ``generateContent`` would (the same faults, in order) as ``{"key", "response"}``
  or ``{"key", "error"}``; ``drop``/``hang`` leave the line out, ``malformed`` cuts it.
- ``fail(operation, Fault)``: a fault on upload, create, get, list, download or cancel (error kinds answer
  instead of doing it; ``hang`` and ``drop`` do it and never answer).
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

from PIL import Image
from wire_server import Fault, Recorded, Reply, WireServer

_ROUTE = re.compile(r"^/(?:v1|v1beta)/models/(?P<model>[^/:]+):generateContent$")
_ids = itertools.count(1)
_V = r"/(?:v1|v1beta)"
_BATCH_ROUTES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("POST", re.compile(rf"^/upload{_V}/files$"), "upload"),
    ("POST", re.compile(rf"^{_V}/models/(?P<id>[^/:]+):batchGenerateContent$"), "create"),
    ("GET", re.compile(rf"^{_V}/batches$"), "list"),
    ("GET", re.compile(rf"^{_V}/batches/(?P<id>[^/:]+)$"), "get"),
    ("POST", re.compile(rf"^{_V}/batches/(?P<id>[^/:]+):cancel$"), "cancel"),
    ("GET", re.compile(rf"^(?:/download)?{_V}/files/(?P<id>[^/:]+):download$"), "download"),
)
_BATCH = "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch"
_OUTPUT = "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatchOutput"

_FAULTS: dict[str, tuple[int, str, str]] = {
    "rate_limit": (429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    "server_error": (500, "INTERNAL", "An internal error has occurred."),
    "unavailable": (503, "UNAVAILABLE", "The service is currently unavailable."),
    "overloaded": (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
    "bad_request": (400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
    "auth": (403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers."),
}


def error_reply(
    code: int,
    status: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return Reply(code, json.dumps({"error": error}).encode(), headers or {})


def _get(mapping: dict[str, Any], camel: str, snake: str) -> Any:
    return mapping.get(camel, mapping.get(snake))


_TOKEN = re.compile(r"\w+|[^\w\s]")  # words and marks: about as many as a tokenizer finds in English


def billed_input_tokens(body: dict[str, Any]) -> int:
    """The prompt tokens Gemini bills, as the stand-in reckons them: every word and mark of the text, and each image
    by Gemini's rule (258 tokens for one at most 384 pixels on both sides, else 258 a 768 x 768 tile)."""
    tokens = 0
    for content in [*body.get("contents", []), _get(body, "systemInstruction", "system_instruction") or {}]:
        for part in content.get("parts", []) if isinstance(content, dict) else []:
            if isinstance(part.get("text"), str):
                tokens += len(_TOKEN.findall(part["text"]))
    for blob in inline_parts(body):
        try:
            with Image.open(io.BytesIO(b64decode(blob.get("data", "")))) as img:
                width, height = img.size
        except (OSError, ValueError):
            continue
        tokens += 258 if width <= 384 and height <= 384 else 258 * (-(-width // 768)) * (-(-height // 768))
    return tokens


def inline_parts(body: dict[str, Any]) -> list[dict[str, Any]]:
    parts = []
    for content in body.get("contents", []):
        for part in content.get("parts", []):
            blob = _get(part, "inlineData", "inline_data")
            if blob is not None:
                parts.append(blob)
    return parts


def b64decode(data: str) -> bytes:
    """Either base64 alphabet, strictly, as proto JSON accepts (the SDK sends the URL-safe one)."""
    return base64.b64decode(data.replace("-", "+").replace("_", "/"), validate=True)


def sent_images(body: dict[str, Any]) -> list[tuple[str, bytes]]:
    """(mime type, decoded bytes) of every inline image of a request body."""
    return [(_get(b, "mimeType", "mime_type"), b64decode(b["data"])) for b in inline_parts(body)]


def _ratings(blocked: bool = False) -> list[dict[str, Any]]:
    categories = ("HARM_CATEGORY_SEXUALLY_EXPLICIT", "HARM_CATEGORY_HATE_SPEECH", "HARM_CATEGORY_HARASSMENT")
    ratings: list[dict[str, Any]] = [{"category": c, "probability": "NEGLIGIBLE"} for c in categories]
    if blocked:
        ratings.append({"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True})
    return ratings


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class StandInFile:
    name: str  # files/<id>
    mime_type: str
    size: int
    data: bytearray = field(default_factory=bytearray)
    done: bool = False
    generated: bool = False  # a responses file, the only kind that can be downloaded

    def resource(self) -> dict[str, Any]:
        source = "GENERATED" if self.generated else "UPLOADED"
        fields = dict(mimeType=self.mime_type, sizeBytes=str(self.size), state="ACTIVE", source=source)
        return dict(name=self.name, **fields, createTime=_now(), uri=f"https://stand-in/v1beta/{self.name}")


@dataclass
class StandInJob:
    name: str  # batches/<id>
    model: str
    display_name: str
    input_file: str
    outcome: str  # succeeded, failed, expired, cancelled
    polls_left: int
    requests: int
    created: str = field(default_factory=_now)
    state: str = "PENDING"
    failed: int = 0
    output: str | None = None

    def operation(self) -> dict[str, Any]:
        running = self.state in ("PENDING", "RUNNING")
        stats = {"requestCount": str(self.requests), "failedRequestCount": str(self.failed)}
        metadata: dict[str, Any] = dict(name=self.name, model=f"models/{self.model}", displayName=self.display_name)
        metadata.update(inputConfig={"fileName": self.input_file}, createTime=self.created, updateTime=_now())
        metadata.update({"@type": _BATCH, "batchStats": stats, "state": f"BATCH_STATE_{self.state}"})
        operation: dict[str, Any] = {"name": self.name, "metadata": metadata, "done": not running}
        if self.output is not None:
            metadata["output"] = {"responsesFile": self.output}
            operation["response"] = {"@type": _OUTPUT, "responsesFile": self.output}
        if self.state == "FAILED":
            operation["error"] = {"code": 13, "message": "The batch failed: an internal error occurred."}
        return operation


class Call(NamedTuple):
    """One batch-mode call: the resource its path names, its headers (lower case), query and raw body."""

    id: str
    headers: dict[str, str]
    query: dict[str, list[str]]
    body: bytes


class GoogleServer(WireServer):
    name = "google"
    recorded_headers = ("x-goog-api-client", "x-server-timeout")

    def __init__(self, key: str, *, known_models: set[str] | None = None, hang_s: float = 3.0) -> None:
        super().__init__(key, hang_s=hang_s)
        self.known_models = known_models
        self.files: dict[str, StandInFile] = {}
        self.jobs: dict[str, StandInJob] = {}
        self.batch_polls = 0  # GETs that see a job running before it ends
        self.batch_outcomes: list[str] = []  # how the next jobs end (default: succeeded)
        self.max_file_bytes = 2_000_000_000
        self.batch_calls: list[str] = []  # every batch-mode operation, in order
        self.batch_requests: list[Recorded] = []  # every batch item answered, as a live request is recorded
        self.api_faults: dict[str, list[Fault]] = {}
        self._uploads = itertools.count(1)

    def fail(self, operation: str, fault: Fault) -> GoogleServer:
        self.api_faults.setdefault(operation, []).append(fault)
        return self

    def route(self, method: str, path: str) -> str | None:
        match = _ROUTE.match(path)
        return match["model"] if method == "POST" and match else None

    def authorized(self, headers: dict[str, str], query: dict[str, list[str]]) -> bool:
        return headers.get("x-goog-api-key") == self.key or query.get("key") == [self.key]

    def unauthorized(self) -> Reply:
        info = {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        }
        return error_reply(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [info])

    def not_found(self, path: str) -> Reply:
        return error_reply(404, "NOT_FOUND", f"Requested entity was not found: {path}")

    def has_image(self, body: dict[str, Any]) -> bool:
        return bool(inline_parts(body))

    def validate(self, model: str, headers: dict[str, str], body: dict[str, Any]) -> Reply | None:
        if self.known_models is not None and model not in self.known_models:
            return self._unknown_model(model)
        if not body.get("contents"):
            return error_reply(400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: contents is not specified")
        for blob in inline_parts(body):
            try:
                b64decode(blob.get("data", ""))
            except ValueError:
                return error_reply(400, "INVALID_ARGUMENT", "Invalid value at 'contents[0].parts[0].inline_data.data'")
        return None

    def _unknown_model(self, model: str) -> Reply:
        message = f"models/{model} is not found for API version v1beta, or is not supported for generateContent."
        return error_reply(404, "NOT_FOUND", message)

    def _usage(self, body: dict[str, Any], output: int) -> dict[str, Any]:
        prompt = billed_input_tokens(body)
        return {"promptTokenCount": prompt, "candidatesTokenCount": output, "totalTokenCount": prompt + output}

    def _response(self, model: str, body: dict[str, Any], **fields: Any) -> dict[str, Any]:
        return {**fields, "modelVersion": model, "responseId": f"resp-{next(_ids):06d}"}

    def ok(self, model: str, body: dict[str, Any], text: str) -> dict[str, Any]:
        candidate = {
            "content": {"parts": [{"text": text}], "role": "model"},
            "finishReason": "STOP",
            "index": 0,
            "safetyRatings": _ratings(),
        }
        output = max(1, len(text) // 4)
        return self._response(model, body, candidates=[candidate], usageMetadata=self._usage(body, output))

    def fault_reply(self, fault: Fault, model: str, body: dict[str, Any]) -> Reply:
        if fault.kind == "empty":  # no candidates and no block reason: nothing came back
            return Reply(200, json.dumps(self._response(model, body, usageMetadata=self._usage(body, 0))).encode())
        if fault.kind == "refusal":
            feedback = {"blockReason": "SAFETY", "safetyRatings": _ratings(blocked=True)}
            payload = self._response(model, body, promptFeedback=feedback, usageMetadata=self._usage(body, 0))
            return Reply(200, json.dumps(payload).encode())
        if fault.kind == "refusal_finish":
            candidate = {"finishReason": "SAFETY", "index": 0, "safetyRatings": _ratings(blocked=True)}
            payload = self._response(model, body, candidates=[candidate], usageMetadata=self._usage(body, 0))
            return Reply(200, json.dumps(payload).encode())
        if fault.kind == "not_found":
            return self._unknown_model(model)
        code, status, message = _FAULTS[fault.kind]
        headers = fault.retry_headers(milliseconds=False)  # Gemini says it in the error body instead
        details = None
        if fault.kind == "rate_limit" and fault.retry_after_ms is not None:
            # The Gemini API says how long to wait inside the error, as google.rpc.RetryInfo.
            delay = f"{float(fault.retry_after_ms) / 1000:g}s"
            details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}]
        return error_reply(code, status, message, details, headers)

    # -- batch mode ------------------------------------------------------------------------------------

    def handle(self, handler: BaseHTTPRequestHandler) -> Reply | None:
        parts = urlsplit(handler.path)
        matched = [
            (op, m) for verb, path, op in _BATCH_ROUTES if verb == handler.command and (m := path.match(parts.path))
        ]
        if not matched:
            return super().handle(handler)
        (operation, match), query = matched[0], parse_qs(parts.query)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        body = handler.rfile.read(int(headers.get("content-length") or 0))
        call = Call(match.groupdict().get("id") or "", headers, query, body)
        if operation == "upload" and "upload_id" in query:
            operation = "upload_chunk"  # the upload id is the credential: the SDK sends no key with the bytes
        elif not self.authorized(headers, query):
            return self.unauthorized()
        with self._lock:
            self.batch_calls.append(operation)
            queue = self.api_faults.get(operation.removesuffix("_chunk"), [])
            fault = queue.pop(0) if queue else None
        if fault is not None and fault.kind == "malformed":
            return Reply(200, b'{"name": "batches/')
        if fault is not None and fault.kind not in ("hang", "drop"):
            return self.fault_reply(fault, "batch", {})
        reply: Reply = getattr(self, f"_{operation}")(call)
        if fault is not None and fault.kind == "hang":  # done, but answered only after the client gave up
            self._stopping.wait(self.hang_s)
        return None if fault is not None and fault.kind == "drop" else reply

    def _upload(self, call: Call) -> Reply:
        size, headers = int(call.headers.get("x-goog-upload-header-content-length") or -1), call.headers
        if headers.get("x-goog-upload-protocol") != "resumable" or headers.get("x-goog-upload-command") != "start":
            return error_reply(400, "INVALID_ARGUMENT", "Expected the start of a resumable upload.")
        if not 0 <= size <= self.max_file_bytes:
            return error_reply(400, "INVALID_ARGUMENT", f"File of {size} bytes: the limit is {self.max_file_bytes}.")
        file_id, mime = f"in{next(self._uploads):06d}", headers.get("x-goog-upload-header-content-type", "")
        self.files[file_id] = StandInFile(f"files/{file_id}", mime, size)
        url = f"{self.url}/upload/v1beta/files?upload_id={file_id}&upload_protocol=resumable"
        return Reply(200, b"", {"x-goog-upload-url": url, "x-goog-upload-status": "active"})

    def _upload_chunk(self, call: Call) -> Reply:
        final = {"x-goog-upload-status": "final"}  # an error ends the upload: the SDK raises, no retry
        if (file := self.files.get(call.query["upload_id"][0])) is None or file.done:
            return error_reply(404, "NOT_FOUND", "No such upload.", headers=final)
        if int(call.headers.get("x-goog-upload-offset") or -1) != len(file.data):
            return error_reply(400, "INVALID_ARGUMENT", f"Wrong offset: {len(file.data)} bytes held.", headers=final)
        file.data += call.body
        if "finalize" not in call.headers.get("x-goog-upload-command", ""):
            return Reply(200, b"", {"x-goog-upload-status": "active"})
        if len(file.data) != file.size:
            return error_reply(400, "INVALID_ARGUMENT", f"Got {len(file.data)} of {file.size} bytes.", headers=final)
        file.done = True
        return Reply(200, json.dumps({"file": file.resource()}).encode(), final)

    def _create(self, call: Call) -> Reply:
        if self.known_models is not None and call.id not in self.known_models:
            return self._unknown_model(call.id)
        batch = json.loads(call.body or b"{}").get("batch", {})
        source = batch.get("inputConfig", {}).get("fileName", "")
        file = self.files.get(source.removeprefix("files/"))
        if file is None or not file.done or file.generated:
            return error_reply(400, "INVALID_ARGUMENT", f"Input file {source!r} not found.")
        if not batch.get("displayName"):
            return error_reply(400, "INVALID_ARGUMENT", "* batch.display_name: field is required")
        outcome = self.batch_outcomes.pop(0) if self.batch_outcomes else "succeeded"
        job_id, n = f"job{next(_ids):06d}", len(file.data.splitlines())
        job = StandInJob(f"batches/{job_id}", call.id, batch["displayName"], source, outcome, self.batch_polls, n)
        self.jobs[job_id] = job
        return Reply(200, json.dumps(job.operation()).encode())

    def _get(self, call: Call) -> Reply:
        if (job := self.jobs.get(call.id)) is None:
            return error_reply(404, "NOT_FOUND", f"Batch batches/{call.id} not found.")
        if job.state in ("PENDING", "RUNNING") and job.polls_left > 0:
            job.polls_left, job.state = job.polls_left - 1, "RUNNING"
        elif job.state in ("PENDING", "RUNNING"):
            self._finish(job)
        return Reply(200, json.dumps(job.operation()).encode())

    def _list(self, call: Call) -> Reply:
        size, start = int(call.query.get("pageSize", ["50"])[0]), int(call.query.get("pageToken", ["0"])[0])
        jobs = sorted(self.jobs.values(), key=lambda job: job.created, reverse=True)  # newest first
        page: dict[str, Any] = {"operations": [job.operation() for job in jobs[start : start + size]]}
        if start + size < len(jobs):
            page["nextPageToken"] = str(start + size)
        return Reply(200, json.dumps(page).encode())

    def _cancel(self, call: Call) -> Reply:
        if (job := self.jobs.get(call.id)) is not None and job.state in ("PENDING", "RUNNING"):
            job.state = "CANCELLED"
        return Reply(200, b"{}") if job is not None else error_reply(404, "NOT_FOUND", f"batches/{call.id} not found.")

    def _download(self, call: Call) -> Reply:
        if (file := self.files.get(call.id)) is None or not file.generated or call.query.get("alt") != ["media"]:
            return error_reply(400, "INVALID_ARGUMENT", f"files/{call.id} cannot be downloaded.")
        return Reply(200, bytes(file.data))

    def _finish(self, job: StandInJob) -> None:
        if job.outcome != "succeeded":
            job.state = job.outcome.upper()
            return
        lines = [self._answer_item(job.model, raw) for raw in self.files[job.input_file[6:]].data.splitlines()]
        kept = [line for line in lines if line is not None]
        job.failed = sum(b'"error": ' in line for line in kept) + len(lines) - len(kept)
        out = StandInFile(f"files/batch-{job.name[8:]}", "application/jsonl", 0, generated=True, done=True)
        out.data = bytearray(b"".join(line + b"\n" for line in kept))
        out.size, job.output, job.state = len(out.data), out.name, "SUCCEEDED"
        self.files[out.name[6:]] = out

    def _answer_item(self, model: str, raw: bytes | bytearray) -> bytes | None:
        """One input line answered as generateContent answers its request; None: the line is left out."""
        try:
            item = json.loads(raw)
            key, body = item["key"], item["request"]
            assert isinstance(body, dict)
        except (ValueError, KeyError, TypeError, AssertionError):
            return b'{"error": {"code": 400, "message": "Invalid batch request line.", "status": "INVALID_ARGUMENT"}}'
        refused = self.validate(model, {}, body)
        fault = None if refused is not None else self._take_fault(body)
        kind = fault.kind if fault else (f"refused-{refused.status}" if refused else None)
        self.batch_requests.append(Recorded(f"batch:{model}", {}, body, time.monotonic(), kind))
        if fault is not None and fault.kind in ("drop", "hang"):
            return None
        if fault is not None and fault.kind == "malformed":
            return json.dumps({"key": key}).encode()[:-1] + b', "response": {"candid'
        if fault is not None:
            refused = self.fault_reply(fault, model, body)
        elif refused is None:
            refused = Reply(200, json.dumps(self.ok(model, body, self.answer(body))).encode())
        payload = json.loads(refused.body)
        answer = {"response": payload} if refused.status == 200 else {"error": payload["error"]}
        return json.dumps({"key": key, **answer}).encode()
