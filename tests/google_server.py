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
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from typing import Any

from wire_server import Fault, Reply, WireServer

_ROUTE = re.compile(r"^/(?:v1|v1beta)/models/(?P<model>[^/:]+):generateContent$")
_ids = itertools.count(1)

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


class GoogleServer(WireServer):
    name = "google"
    recorded_headers = ("x-goog-api-client", "x-server-timeout")

    def __init__(self, key: str, *, known_models: set[str] | None = None, hang_s: float = 3.0) -> None:
        super().__init__(key, hang_s=hang_s)
        self.known_models = known_models

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
        prompt = 270 if self.has_image(body) else 5
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
