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
"""

from __future__ import annotations

import base64
import binascii
import io
import itertools
import json
from typing import Any

from PIL import Image
from wire_server import Fault, Reply, WireServer

NEW_API_VERSION = "2026-10-21"
MAX_BASE64_BYTES = 5 * 1024 * 1024
_ids = itertools.count(1)

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
            "usage": {"input_tokens": 1500 if self.has_image(body) else 12, "output_tokens": output_tokens},
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
