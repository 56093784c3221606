"""The common part of the provider stand-ins (anthropic_server.py, google_server.py): a threaded HTTP/1.1
server on 127.0.0.1 that records every request and plays faults on demand.

A provider server says how its protocol looks (routes, auth, bodies, error bodies); this base owns the
flow: read, authenticate, validate, record, then either a scripted fault or the normal answer. Faults are
consumed in the order they were added, by the requests they match: by default only requests that carry an
image, so a preflight call (text only) is left alone unless a fault says otherwise.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

FaultKind = Literal[
    "rate_limit",  # 429, with Retry-After / retry-after-ms when given
    "server_error",  # 500
    "unavailable",  # 503
    "overloaded",  # Anthropic: 529 overloaded_error; Google: 503 "model is overloaded"
    "hang",  # no answer for hang_s (past the client's timeout)
    "malformed",  # 200 with a body that is not JSON
    "empty",  # 200 with no text at all
    "refusal",  # 200 with the provider's refusal / safety block
    "refusal_finish",  # Google: a candidate stopped with finishReason SAFETY (Anthropic: same as refusal)
    "drop",  # the connection closed without any response
    "bad_request",  # 400
    "auth",  # the provider's wrong-key answer
    "not_found",  # 404: unknown model
]


@dataclass
class Fault:
    kind: FaultKind
    times: int | None = 1  # None: every matching request, forever
    retry_after: str | None = None
    retry_after_ms: str | None = None
    only_images: bool = True  # leave text-only requests (preflight) alone

    def retry_headers(self, milliseconds: bool = True) -> dict[str, str]:
        """The Retry-After headers the fault asks for (``retry-after-ms`` too, where the provider sends it)."""
        headers = {} if self.retry_after is None else {"retry-after": self.retry_after}
        if milliseconds and self.retry_after_ms is not None:
            headers["retry-after-ms"] = self.retry_after_ms
        return headers


@dataclass(frozen=True)
class Recorded:
    """One request as it arrived: path, the provider headers worth asserting on (never the key), JSON body."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    arrived: float  # time.monotonic()
    fault: str | None


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class WireServer:
    """Base of a provider stand-in. Subclasses implement the ``_`` hooks below."""

    name = "wire"
    recorded_headers: tuple[str, ...] = ()

    def __init__(self, key: str, *, hang_s: float = 3.0) -> None:
        self.key = key
        self.hang_s = hang_s
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self.answer: Callable[[dict[str, Any]], str] = lambda body: "benign"
        self.url = ""
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- hooks a provider implements ----------------------------------------------------------------

    def route(self, method: str, path: str) -> str | None:
        """The model a request path addresses, or None when the path is not an endpoint of this API."""
        raise NotImplementedError

    def authorized(self, headers: dict[str, str], query: dict[str, list[str]]) -> bool:
        raise NotImplementedError

    def validate(self, model: str, headers: dict[str, str], body: dict[str, Any]) -> Reply | None:
        """The provider's own 4xx for a request it would refuse, else None."""
        return None

    def has_image(self, body: dict[str, Any]) -> bool:
        raise NotImplementedError

    def ok(self, model: str, body: dict[str, Any], text: str) -> dict[str, Any]:
        raise NotImplementedError

    def fault_reply(self, fault: Fault, model: str, body: dict[str, Any]) -> Reply:
        raise NotImplementedError

    def unauthorized(self) -> Reply:
        raise NotImplementedError

    def not_found(self, path: str) -> Reply:
        raise NotImplementedError

    # -- the flow ------------------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> WireServer:
        with self._lock:
            self.faults.append(fault)
        return self

    def image_requests(self) -> list[Recorded]:
        return [r for r in self.requests if self.has_image(r.body)]

    def _take_fault(self, body: dict[str, Any]) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times == 0 or (fault.only_images and not self.has_image(body)):
                    continue
                if fault.times is not None:
                    fault.times -= 1
                return fault
        return None

    def handle(self, handler: BaseHTTPRequestHandler) -> Reply | None:
        """The reply to one request; None means drop the connection without answering."""
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("content-length") or 0)
        raw = handler.rfile.read(length) if length else b""
        model = self.route(handler.command, parts.path)
        if model is None:
            return self.not_found(parts.path)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        if not self.authorized(headers, parse_qs(parts.query)):
            return self.unauthorized()
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return Reply(400, b'{"error": "request body is not a JSON object"}')
        refused = self.validate(model, headers, body)
        fault = None if refused is not None else self._take_fault(body)
        kept = {h: headers[h] for h in self.recorded_headers if h in headers}
        with self._lock:
            kind = fault.kind if fault else (f"refused-{refused.status}" if refused else None)
            self.requests.append(Recorded(parts.path, kept, body, time.monotonic(), kind))
        if refused is not None:
            return refused
        if fault is None:
            return Reply(200, json.dumps(self.ok(model, body, self.answer(body))).encode())
        if fault.kind == "drop":
            return None
        if fault.kind == "hang":
            self._stopping.wait(self.hang_s)
            return Reply(200, json.dumps(self.ok(model, body, self.answer(body))).encode())
        if fault.kind == "malformed":
            return Reply(200, b'{"id": "truncated", "content": [')
        return self.fault_reply(fault, model, body)

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> WireServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = True
        # A short poll interval keeps shutdown() (and so each test's teardown) quick.
        thread = threading.Thread(target=server.serve_forever, args=(0.02,), name=f"{self.name}-stand-in", daemon=True)
        thread.start()
        self._server, self._thread = server, thread
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    @contextmanager
    def running(self) -> Iterator[WireServer]:
        self.start()
        try:
            yield self
        finally:
            self.stop()


def _handler_for(server: WireServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' connection pools expect

        def _serve(self) -> None:
            reply = server.handle(self)
            if reply is None:
                self.close_connection = True
                with suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            try:
                self.send_response(reply.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(reply.body)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(reply.body)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up (its timeout): nothing to answer

        do_POST = _serve  # noqa: N815 - http.server's naming
        do_GET = _serve  # noqa: N815

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's signature
            return None

    return Handler
