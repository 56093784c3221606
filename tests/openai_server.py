"""A local stand-in for an OpenAI-compatible Chat Completions server, with faults on demand.

It speaks the real protocol, so the official ``openai`` SDK talks to it unchanged through ``base_url``:

- ``POST /v1/chat/completions``: checks ``Authorization: Bearer <key>``, the model id and the shape of the
  request (messages, text / image_url parts, data URLs), then answers a ``chat.completion`` object with
  ``id``, ``object``, ``created``, ``model``, ``choices`` and ``usage``;
- ``GET /v1/models``: the model list;
- errors in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}`` with the status codes OpenAI
  uses (401 invalid_api_key, 404 model_not_found, 400 invalid_request_error, 429 with ``retry-after`` and
  ``retry-after-ms``, 500, 503).

Faults (:class:`Fault`) are injected per request (``add_fault``: the next N matching requests) or at a rate
(``rate_429``): rate limits, server errors, a hang past the client's timeout, malformed JSON, an empty choice
list, empty content, a refusal, a content-filter stop, a dropped connection. ``latency_s`` delays every
answer by a fixed time counted from the request's arrival.

A fault plan (:class:`FaultPlan`, set by ``POST /_reset``) injects faults at set rates for whole benchmark
runs: transient faults on a case's first attempts, persistent ones that outlast a run's retries, and the
model's own refusals and empty answers. Each is decided by a seeded hash of the case's image and the attempt
number, never by arrival order, so a case meets the same faults however many requests are in flight.
With ``log`` on, every case request is logged (image sha256, attempt, arrival and end, status, fault):
``GET /_log?since=N`` returns the entries from N on, what the crash and fault benchmarks compare with the
client's store.

Every chat request body is recorded (``record=True``), so a test can decode the data URL and compare the
bytes with the case's image. Counters (``stats``) time the case requests (not the preflight's probe) from
the first arrival to the last answer: how ``bench/api_throughput.py`` measures throughput server-side.

The Batch API (``/v1/files``, ``/v1/batches``) is served by ``tests/openai_batches.py`` (``server.batch_api``):
each batch item is answered as this chat endpoint answers its body (``batch_answer``), faults included.

In a test: ``OpenAIServer(...).start()`` runs it on a thread with its own event loop; ``stop()`` ends it.
For a benchmark: ``python tests/openai_server.py --latency 0.2`` runs it in its own process (no shared GIL)
and prints ``READY <port>``; ``GET /_stats`` and ``POST /_reset`` (JSON settings) control it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import io
import json
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from openai_batches import BatchAPI
from PIL import Image

FaultKind = Literal[
    "rate_limit",  # 429 with retry-after (seconds) and retry-after-ms
    "insufficient_quota",  # 429 insufficient_quota: the account is out of credit, waiting will not help
    "server_error",  # 500
    "overloaded",  # 503
    "hang",  # no answer for hang_s (past the client's timeout)
    "malformed",  # 200 with a body cut short
    "no_choices",  # 200 with "choices": []
    "empty_content",  # 200 with content ""
    "refusal",  # 200 with message.refusal set, content null
    "content_filter",  # 200 with finish_reason "content_filter", content null
    "drop",  # the connection is closed without an answer
    "bad_request",  # 400 invalid_request_error; with echo_auth, a message quoting the Authorization header
    "auth",  # 401 invalid_api_key, whatever the key
]

Match = Callable[[dict[str, Any]], bool]


@dataclass
class Fault:
    kind: FaultKind
    retry_after_s: float | None = None  # 429 / 500 / 503: a retry-after header (seconds)
    retry_after_ms: float | None = None  # 429 / 500 / 503: a retry-after-ms header
    hang_s: float = 30.0
    echo_auth: bool = False  # bad_request: quote the request's Authorization header, as a careless proxy might


TRANSIENT_KINDS = ("rate_limit", "server_error", "overloaded", "hang", "malformed", "drop")
ANSWER_KINDS = ("refusal", "empty_content", "content_filter", "no_choices")  # the model's own answers: not retried


@dataclass
class FaultPlan:
    """Faults at set rates, decided per case (its image's sha256) and attempt by a seeded hash.

    - ``transient``: kind -> rate, drawn afresh for each of a case's first ``transient_attempts`` attempts
      (a 429 carries ``retry_after_s``; a hang lasts ``hang_s``); later attempts are answered, so a client
      allowing more attempts than that always gets through;
    - ``persistent_rate``: the share of cases whose first ``persistent_attempts`` attempts all fail with
      ``persistent_kind`` (an outage longer than a run's retries); attempts are counted from the last reset,
      so a second run against the same server gets these cases answered;
    - ``answers``: kind -> rate of the model's own refusals and empty answers, the same at every attempt.
    """

    transient: dict[str, float] = field(default_factory=dict)
    transient_attempts: int = 2
    persistent_rate: float = 0.0
    persistent_kind: FaultKind = "overloaded"
    persistent_attempts: int = 4
    answers: dict[str, float] = field(default_factory=dict)
    retry_after_s: float = 1.0
    hang_s: float = 30.0
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = (set(self.transient) - set(TRANSIENT_KINDS)) | (set(self.answers) - set(ANSWER_KINDS))
        if unknown:
            raise ValueError(f"unknown fault kind(s) in the plan: {sorted(unknown)}")
        if sum(self.transient.values()) > 1 or sum(self.answers.values()) > 1:
            raise ValueError("the rates of one group of faults add up to more than 1")

    @property
    def active(self) -> bool:
        return bool(self.transient or self.persistent_rate or self.answers)

    def draw(self, digest: str, salt: str) -> float:
        """A uniform number in [0, 1) fixed by the seed, the case and ``salt``."""
        value = hashlib.sha256(f"{self.seed}:{digest}:{salt}".encode()).digest()[:8]
        return int.from_bytes(value, "big") / 2**64

    def _pick(self, rates: dict[str, float], u: float) -> str | None:
        for kind in sorted(rates):
            if u < rates[kind]:
                return kind
            u -= rates[kind]
        return None

    def fault(self, digest: str, attempt: int) -> Fault | None:
        """The fault (if any) for a case's ``attempt``-th request (1-based)."""
        if attempt <= self.persistent_attempts and self.persistent(digest):
            return self._make(self.persistent_kind)
        answer = self._pick(self.answers, self.draw(digest, "answer"))
        if answer is not None:
            return self._make(answer)
        if attempt <= self.transient_attempts:
            kind = self._pick(self.transient, self.draw(digest, f"attempt-{attempt}"))
            if kind is not None:
                return self._make(kind)
        return None

    def persistent(self, digest: str) -> bool:
        return bool(self.persistent_rate) and self.draw(digest, "persistent") < self.persistent_rate

    def _make(self, kind: str) -> Fault:
        retry_after = self.retry_after_s if kind == "rate_limit" else None
        return Fault(kind, retry_after_s=retry_after, hang_s=self.hang_s)  # type: ignore[arg-type]


# Deterministic answers for benchmarks ("varied"): a mix that every parser outcome can come from.
VARIED_ANSWERS = (
    "benign",
    "Malignant.",
    "The lesion appears benign, with smooth margins.",
    "upper left",
    "It is located in the lower right part of the image.",
    "center",
    "not visible",
    "42.5",
    "About 7 mm.",
    "The liver is normal in size with a smooth contour. No focal lesion is seen.",
    "I'm sorry, I can't help with interpreting medical images.",
    "normal",
    "2",
    "left middle or maybe upper right",
)


def varied_answer(digest: str, chars: int = 0) -> str:
    """One of :data:`VARIED_ANSWERS`, fixed by the image digest; padded with report sentences to ``chars``."""
    text = VARIED_ANSWERS[int(digest[:8], 16) % len(VARIED_ANSWERS)]
    filler = " The gallbladder is well distended with a thin wall and no stones."
    while len(text) < chars:
        text += filler
    return text


_LETTERS = str.maketrans("0123456789", "ghijklmnop")


def unique_answer(digest: str, chars: int = 0) -> str:
    """:func:`varied_answer` with the case's own tag (letters only, so no parser reads a number or a word in it):
    every case's answer differs, so a judge is asked once per case (``bench/judge_throughput.py``)."""
    return varied_answer(digest, chars) + f" Case {digest[:10].translate(_LETTERS)}."


_TOKEN = re.compile(r"\w+|[^\w\s]")  # words and marks: about as many as a BPE tokenizer finds in English


def billed_input_tokens(body: dict[str, Any]) -> int:
    """The input tokens OpenAI bills a chat request, as the stand-in reckons them: every word and mark of its text,
    3 tokens a message and 3 to prime the answer, and each image by OpenAI's tile rule at detail 'high' (85 + 170 a
    512-pixel tile of the image fitted to 2048 and then to a 768 short side), at the image's real size."""
    tokens = 3
    for message in body.get("messages", []):
        tokens += 3
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for part in parts:
            if part.get("type") == "text":
                tokens += len(_TOKEN.findall(part.get("text") or ""))
            elif part.get("type") == "image_url":
                tokens += _tile_tokens(part["image_url"].get("url", ""), part["image_url"].get("detail", "high"))
    return tokens


def _tile_tokens(url: str, detail: str) -> int:
    if detail == "low":
        return 85
    try:
        with Image.open(io.BytesIO(base64.b64decode(url.partition(",")[2]))) as img:
            width, height = img.size
    except (OSError, ValueError):
        return 85
    scale = min(1.0, 2048 / max(width, height))
    width, height = width * scale, height * scale
    scale = min(1.0, 768 / min(width, height))
    width, height = int(width * scale), int(height * scale)
    return 85 + 170 * (-(-width // 512)) * (-(-height // 512))


def image_digest(body: dict[str, Any]) -> str | None:
    """sha256 (hex) of the first image's bytes: which case a request is for."""
    urls = image_parts(body)
    if not urls:
        return None
    try:
        return hashlib.sha256(base64.b64decode(urls[0].partition(",")[2])).hexdigest()
    except ValueError:
        return None


@dataclass
class _Rule:
    fault: Fault
    remaining: int | None  # None: forever
    when: Match | None
    probes: bool  # whether a preflight probe may take this fault


_DATA_URL = re.compile(r"data:image/[a-z0-9.+-]+;base64,[A-Za-z0-9+/]")
PROBE_MAX_BYTES = 1024  # u2eval's preflight sends a tiny image; every case image is larger


def is_probe(body: dict[str, Any]) -> bool:
    """A preflight call: only images under PROBE_MAX_BYTES, or (a text-only adapter's, e.g. a judge's) no image
    and the preflight's one line."""
    images = image_parts(body)
    if images:
        return all(len(url.partition(",")[2]) * 3 // 4 <= PROBE_MAX_BYTES for url in images)
    messages = body.get("messages", [])
    texts = [p.get("text") for m in messages if isinstance(m.get("content"), list) for p in m["content"]]
    texts += [m["content"] for m in messages if isinstance(m.get("content"), str)]
    return texts == ["Reply OK."]


@dataclass
class ServerStats:
    """What the server saw. Throughput counts case requests only, not the preflight's probe."""

    chat_requests: int = 0
    answered: int = 0  # 200 answers with content
    faults: dict[str, int] = field(default_factory=dict)
    first_arrival: float | None = None  # time.monotonic() of the first case request (not a probe)
    last_answer: float | None = None  # ... and of the last answer to one
    case_requests: int = 0
    case_answered: int = 0
    max_in_flight: int = 0
    in_flight: int = 0

    def as_json(self) -> dict[str, Any]:
        span = (
            self.last_answer - self.first_arrival
            if self.first_arrival is not None and self.last_answer is not None
            else None
        )
        return {
            "chat_requests": self.chat_requests,
            "answered": self.answered,
            "faults": dict(self.faults),
            "case_requests": self.case_requests,
            "case_answered": self.case_answered,
            "span_s": span,
            "max_in_flight": self.max_in_flight,
        }


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    arrived: float  # time.monotonic()
    probe: bool
    raw: bytes = b""  # the body's bytes as they came


def default_answer(body: dict[str, Any]) -> str:
    """A fixed answer (tests that need others pass their own ``answer``)."""
    return "benign"


# fault kind -> (status, message, error type, error code), as OpenAI answers them
_ERRORS: dict[str, tuple[int, str, str, str | None]] = {
    "rate_limit": (429, "Rate limit reached for requests. Please try again later.", "requests", "rate_limit_exceeded"),
    "insufficient_quota": (
        429,
        "You exceeded your current quota, please check your plan and billing details.",
        "insufficient_quota",
        "insufficient_quota",
    ),
    "server_error": (500, "The server had an error while processing your request.", "server_error", None),
    "overloaded": (503, "The engine is currently overloaded, please try again later.", "server_error", None),
    "bad_request": (400, "Invalid image.", "invalid_request_error", "invalid_image"),
    "auth": (401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
}


# answer fault kind -> how the completion says it
_ANSWER_FAULTS: dict[str, dict[str, Any]] = {
    "no_choices": {"content": None, "choices": False},
    "empty_content": {"content": ""},
    "refusal": {"content": None, "refusal": "I'm sorry, I can't help with that."},
    "content_filter": {"content": None, "finish_reason": "content_filter"},
}


def _error_body(message: str, type_: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def image_parts(body: dict[str, Any]) -> list[str]:
    """Every image URL in a chat request, in order."""
    urls = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            urls.extend(p["image_url"]["url"] for p in content if p.get("type") == "image_url")
    return urls


def decode_data_url(url: str) -> tuple[str, bytes]:
    """``data:<media>;base64,<data>`` -> (media type, bytes)."""
    head, _, data = url.partition(",")
    if not head.startswith("data:") or not head.endswith(";base64"):
        raise ValueError(f"not a base64 data URL: {url[:40]!r}")
    return head[5:-7], base64.b64decode(data, validate=True)


def _readable_image(url: str) -> bool:
    """Whether a data URL holds an image, as the real API checks. Small images (the preflight's probe) are
    decoded in full; for large ones only the signature is read, or the stand-in, not the client, would be
    the bottleneck of the throughput benchmark (the tests decode what they assert on)."""
    data = url.partition(",")[2]
    try:
        if len(data) > 64_000:
            return base64.b64decode(data[:24]).startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"))
        with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as image:
            image.load()
        return True
    except (ValueError, OSError):
        return False


def _validate(body: Any, models: tuple[str, ...]) -> tuple[int, dict[str, Any]] | None:
    """The checks the real endpoint makes, as (status, error body); None when the request is well formed."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
        return 400, _error_body("'messages' is a required property", "invalid_request_error", None, "messages")
    if body.get("model") not in models:
        message = f"The model `{body.get('model')}` does not exist or you do not have access to it."
        return 404, _error_body(message, "invalid_request_error", "model_not_found")
    for message in body["messages"]:
        if message.get("role") not in ("system", "user", "assistant"):
            return 400, _error_body(f"Invalid role {message.get('role')!r}", "invalid_request_error", None)
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(parts, list):
            return 400, _error_body("Invalid content", "invalid_request_error", None, "messages")
        for part in parts:
            kind = part.get("type")
            if kind == "text" and isinstance(part.get("text"), str):
                continue
            if kind == "image_url" and message["role"] == "user":
                url = part.get("image_url", {}).get("url") if isinstance(part.get("image_url"), dict) else None
                if not isinstance(url, str) or not _DATA_URL.match(url, 0, 100):
                    return 400, _error_body("Invalid image URL.", "invalid_request_error", "invalid_image_url")
                if not _readable_image(url):
                    return 400, _error_body("Invalid image.", "invalid_request_error", "invalid_image")
                continue
            return 400, _error_body(f"Invalid content part {kind!r}", "invalid_request_error", None)
    return None


class OpenAIServer:
    """One OpenAI-compatible endpoint on 127.0.0.1 at a free port (``url`` ends in ``/v1``)."""

    def __init__(
        self,
        *,
        api_key: str | None = "sk-test-key",
        models: tuple[str, ...] = ("gpt-4o-2024-08-06",),
        latency_s: float = 0.0,
        answer: Callable[[dict[str, Any]], str] = default_answer,
        rate_429: float = 0.0,
        retry_after_s: float = 1.0,
        record: bool = True,
        seed: int = 0,
        port: int = 0,
    ) -> None:
        self.api_key = api_key
        self.models = models
        self.latency_s = latency_s
        self.answer = answer
        self.rate_429 = rate_429
        self.retry_after_s = retry_after_s
        self.record = record
        self.port = port
        self.requests: list[RecordedRequest] = []
        self.stats = ServerStats()
        self._rules: list[_Rule] = []
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._hanging: set[asyncio.Future[None]] = set()
        self._counter = 0
        self.url = ""
        self.plan = FaultPlan()
        self.log_requests = False  # log every case request (``GET /_log``)
        self.log: list[dict[str, Any]] = []
        self.answers = "fixed"  # "fixed": ``answer(body)``; "varied" / "unique": :func:`varied_answer` of the image
        self.answer_chars = 0  # varied answers padded to at least this many characters
        self._attempts: dict[str, int] = {}
        self.batch_api = BatchAPI(self)  # /v1/files and /v1/batches (tests/openai_batches.py)

    # -- faults ----------------------------------------------------------------------------------------

    def add_fault(
        self, fault: Fault | FaultKind, *, times: int | None = 1, when: Match | None = None, probes: bool = False
    ) -> None:
        """Answer the next ``times`` chat requests matching ``when`` (all, by default) with ``fault``;
        ``times=None``: every matching request, until ``clear_faults``. Rules apply in the order added.
        Preflight probes are left alone unless ``probes``."""
        rule = _Rule(fault if isinstance(fault, Fault) else Fault(fault), times, when, probes)
        with self._lock:
            self._rules.append(rule)

    def clear_faults(self) -> None:
        with self._lock:
            self._rules.clear()
            self.rate_429 = 0.0

    def _next_fault(self, body: dict[str, Any], probe: bool) -> Fault | None:
        with self._lock:
            for rule in self._rules:
                if rule.remaining == 0 or (probe and not rule.probes):
                    continue
                if rule.when is not None and not rule.when(body):
                    continue
                if rule.remaining is not None:
                    rule.remaining -= 1
                return rule.fault
            if self.rate_429 and not probe and self._random.random() < self.rate_429:
                return Fault("rate_limit", retry_after_s=self.retry_after_s)
        return None

    def case_requests(self) -> list[RecordedRequest]:
        """The recorded chat requests for cases (not preflight probes), in arrival order."""
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions") and not r.probe]

    # -- lifecycle -------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self.batch_api.routes(app)
        app.router.add_get("/_stats", self._stats)
        app.router.add_get("/_log", self._log)
        app.router.add_post("/_reset", self._reset)
        return app

    async def serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=1024)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"

    async def shutdown(self) -> None:
        for future in list(self._hanging):
            future.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    def start(self) -> OpenAIServer:
        """Serve on a background thread with its own event loop; returns once the port is bound."""
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.serve())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.shutdown())
            loop.close()

        self._thread = threading.Thread(target=main, name="openai-stand-in", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the OpenAI stand-in did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._thread = None

    # -- handlers --------------------------------------------------------------------------------------

    def _authorised(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        header = request.headers.get("Authorization", "")
        if header == f"Bearer {self.api_key}":
            return None
        given = header.removeprefix("Bearer ")
        masked = given[:3] + "*" * max(0, len(given) - 7) + given[-4:] if len(given) > 8 else "***"
        message = (
            f"Incorrect API key provided: {masked}. You can find your API key at "
            "https://platform.openai.com/account/api-keys."
        )
        return web.json_response(_error_body(message, "invalid_request_error", "invalid_api_key"), status=401)

    async def _models(self, request: web.Request) -> web.Response:
        denied = self._authorised(request)
        if denied is not None:
            return denied
        data = [{"id": m, "object": "model", "created": 1715367049, "owned_by": "system"} for m in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        stats = self.stats
        stats.chat_requests += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            return await self._chat_answer(request, arrived)
        finally:
            stats.in_flight -= 1

    async def _chat_answer(self, request: web.Request, arrived: float) -> web.StreamResponse:
        denied = self._authorised(request)
        if denied is not None:
            await request.read()
            return denied
        raw = await request.read()
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            return web.json_response(
                _error_body("We could not parse the JSON body of your request.", "invalid_request_error", None),
                status=400,
            )
        invalid = _validate(body, self.models)
        probe = invalid is not None or is_probe(body)
        counted = not probe  # throughput counts case requests only
        if counted:
            self.stats.case_requests += 1
            if self.stats.first_arrival is None:
                self.stats.first_arrival = arrived
        if self.record:
            with self._lock:
                self.requests.append(RecordedRequest(request.path, dict(request.headers), body, arrived, probe, raw))
        if invalid is not None:
            return web.json_response(invalid[1], status=invalid[0])
        digest, attempt = None, 0
        if counted and (self.plan.active or self.log_requests or self.answers != "fixed"):
            digest = image_digest(body) or ""
            with self._lock:
                attempt = self._attempts[digest] = self._attempts.get(digest, 0) + 1
        fault = self._next_fault(body, probe)
        if fault is None and digest is not None and self.plan.active:
            fault = self.plan.fault(digest, attempt)
        entry: dict[str, Any] = {"image": digest, "attempt": attempt, "arrived": arrived, "ended": None}
        entry |= {"status": None, "fault": fault.kind if fault else None, "retry_after_s": None}
        entry["persistent"] = digest is not None and self.plan.persistent(digest)
        if fault is not None:
            entry["retry_after_s"] = fault.retry_after_s
        if digest is not None and self.log_requests:
            with self._lock:
                self.log.append(entry)
        response = await self._respond(request, body, counted, arrived, digest, fault)
        entry["ended"] = time.monotonic()
        entry["status"] = 0 if entry["fault"] == "drop" else response.status  # 0: no answer reached the client
        return response

    async def _respond(
        self,
        request: web.Request,
        body: dict[str, Any],
        counted: bool,
        arrived: float,
        digest: str | None,
        fault: Fault | None,
    ) -> web.StreamResponse:
        if fault is not None:
            self.stats.faults[fault.kind] = self.stats.faults.get(fault.kind, 0) + 1
            return await self._fault(request, fault, body)
        remaining = self.latency_s - (time.monotonic() - arrived)
        if remaining > 0:
            await asyncio.sleep(remaining)
        response = web.json_response(self._completion(body, self._text(body, digest)))
        self.stats.answered += 1
        if counted:
            self.stats.case_answered += 1
            self.stats.last_answer = time.monotonic()
        return response

    def _text(self, body: dict[str, Any], digest: str | None) -> str:
        if self.answers == "varied":
            return varied_answer(digest or "0", self.answer_chars)
        if self.answers == "unique":
            return unique_answer(digest or "0", self.answer_chars)
        return self.answer(body)

    def batch_answer(self, body: Any) -> tuple[int, dict[str, Any]]:
        """(status, body) as the chat endpoint would answer ``body``, for a batch item: its checks, its faults
        (rules and plan; a fault without a status of its own, e.g. a dropped connection, is a 500) and answers."""
        invalid = _validate(body, self.models)
        if invalid is not None:
            return invalid
        probe = is_probe(body)
        digest, attempt = None, 0
        if not probe and (self.plan.active or self.log_requests or self.answers != "fixed"):
            digest = image_digest(body) or ""
            with self._lock:
                attempt = self._attempts[digest] = self._attempts.get(digest, 0) + 1
        fault = self._next_fault(body, probe)
        if fault is None and digest is not None and self.plan.active:
            fault = self.plan.fault(digest, attempt)
        if fault is not None:
            self.stats.faults[fault.kind] = self.stats.faults.get(fault.kind, 0) + 1
            if fault.kind in _ANSWER_FAULTS:
                return 200, self._completion(body, **_ANSWER_FAULTS[fault.kind])
            status, message, type_, code = _ERRORS.get(fault.kind, _ERRORS["server_error"])
            return status, _error_body(message, type_, code)
        self.stats.answered += 1
        return 200, self._completion(body, self._text(body, digest))

    def _completion(
        self,
        body: dict[str, Any],
        content: str | None = None,
        *,
        finish_reason: str = "stop",
        refusal: str | None = None,
        choices: bool = True,
    ) -> dict[str, Any]:
        self._counter += 1
        prompt_tokens = billed_input_tokens(body)
        completion_tokens = len(_TOKEN.findall(content or refusal or "")) + 1
        message = {"role": "assistant", "content": content, "refusal": refusal, "annotations": []}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        return {
            "id": f"chatcmpl-stand-in-{self._counter}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [choice] if choices else [],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "system_fingerprint": "fp_stand_in",
        }

    async def _fault(self, request: web.Request, fault: Fault, body: dict[str, Any]) -> web.StreamResponse:
        kind = fault.kind
        if kind in _ERRORS:
            status, message, type_, code = _ERRORS[kind]
            if fault.echo_auth:
                message += f" (request had Authorization: {request.headers.get('Authorization')})"
            headers = {}
            if fault.retry_after_s is not None:
                headers["retry-after"] = f"{fault.retry_after_s:g}"
            if fault.retry_after_ms is not None:
                headers["retry-after-ms"] = f"{fault.retry_after_ms:g}"
            return web.json_response(_error_body(message, type_, code), status=status, headers=headers)
        if kind == "hang":
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._hanging.add(future)
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(future, fault.hang_s)
            self._hanging.discard(future)
            return web.json_response(self._completion(body, "too late"))
        if kind == "drop":
            assert request.transport is not None
            request.transport.abort()  # a reset, as a crashed upstream or a load balancer would give
            return web.Response(status=200)
        if kind == "malformed":
            text = json.dumps(self._completion(body, "benign"))
            return web.Response(text=text[: len(text) // 2], content_type="application/json")
        return web.json_response(self._completion(body, **_ANSWER_FAULTS[kind]))

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.as_json() | {"batches": self.batch_api.stats()})

    async def _log(self, request: web.Request) -> web.Response:
        since = int(request.query.get("since", "0"))
        with self._lock:
            entries = self.log[since:]
            return web.json_response({"entries": entries, "next": since + len(entries)})

    async def _reset(self, request: web.Request) -> web.Response:
        settings = await request.json() if request.can_read_body else {}
        try:
            plan = FaultPlan(**settings.get("plan", {}))
        except (TypeError, ValueError) as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        self.stats = ServerStats()
        with self._lock:
            self.requests.clear()
            self._rules.clear()
            self.log = []
            self._attempts.clear()
        self.latency_s = float(settings.get("latency_s", self.latency_s))
        self.rate_429 = float(settings.get("rate_429", 0.0))
        self.retry_after_s = float(settings.get("retry_after_s", self.retry_after_s))
        self._random = random.Random(int(settings.get("seed", 0)))
        self.plan = plan
        self.log_requests = bool(settings.get("log", False))
        self.answers = str(settings.get("answers", "fixed"))
        self.answer_chars = int(settings.get("answer_chars", 0))
        self.batch_api.reset(int(settings.get("batch_polls", 0)), float(settings.get("batch_latency_s", 0.0)))
        return web.json_response({"ok": True})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds from arrival to answer")
    parser.add_argument("--rate-429", type=float, default=0.0, help="fraction of requests answered 429")
    parser.add_argument("--retry-after", type=float, default=1.0, help="the 429s' retry-after, seconds")
    parser.add_argument("--api-key", default="sk-test-key")
    parser.add_argument("--model", action="append", help="served model id (repeatable)")
    parser.add_argument("--judge", action="store_true", help="answer u2eval's judge prompts (tests/judge_standin.py)")
    args = parser.parse_args()
    answer = default_answer
    if args.judge:
        from judge_standin import judge_answer  # this script's own folder is on sys.path

        answer = judge_answer
    server = OpenAIServer(
        api_key=args.api_key,
        models=tuple(args.model or ("gpt-4o-2024-08-06",)),
        latency_s=args.latency,
        rate_429=args.rate_429,
        retry_after_s=args.retry_after,
        record=False,
        port=args.port,
        answer=answer,
    )

    async def run() -> None:
        await server.serve()
        print(f"READY {server.port}", flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
