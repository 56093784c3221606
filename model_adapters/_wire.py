"""Small helpers the hosted-API adapters share: the API key, Retry-After, and keeping keys out of messages.

Not an adapter (no ``create``), so it has no line in the ADAPTERS table.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol, TypeVar

from u2eval.errors import AdapterError, ConfigError
from u2eval.models.protocol import AdapterOptions, ModelRequest
from u2eval.records import Completion, ImageSent


class BuiltRequest(Protocol):
    """A provider request as built from a prompt: what the provider is sent, and the image as it went."""

    @property
    def image_sent(self) -> ImageSent | None: ...


W = TypeVar("W", bound=BuiltRequest)
R = TypeVar("R")


async def one_by_one(
    requests: Sequence[ModelRequest],
    build: Callable[[ModelRequest], W],
    send: Callable[[W], Awaitable[R]],
    read: Callable[[R, ModelRequest, W, float], Completion],
) -> list[Completion]:
    """The hosted APIs without batching (Anthropic, Google): each request built off the event loop (images are
    encoded there), sent, and its response read with the latency of the call. An input that cannot be built (an
    image that cannot be read or fitted) is a bad request: sending it again cannot help."""
    completions = []
    for request in requests:
        try:
            wire = await asyncio.to_thread(build, request)
        except ValueError as exc:
            raise AdapterError(str(exc), kind="bad_request", retryable=False) from exc
        started = time.perf_counter()
        response = await send(wire)
        completions.append(read(response, request, wire, time.perf_counter() - started))
    return completions


def api_key(provider: str, names: tuple[str, ...]) -> str:
    """The first non-empty environment variable of ``names``; keys never come from files or flags."""
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    raise ConfigError(f"{provider}: no API key; set {' or '.join(names)} in the environment")


def backstop_timeout_s(options: AdapterOptions) -> float:
    """The SDK's own timeout: a little past the dispatcher's per-attempt one, which is the one that counts
    (an SDK timeout firing first would only blur which of the two gave up)."""
    return options.timeout_s + 5.0


def retry_after_s(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms``, else ``retry-after`` (seconds or HTTP date)."""
    if headers is None:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def redact(message: str, secret: str) -> str:
    """``message`` with ``secret`` blanked: error texts are stored, keys must never be."""
    return message.replace(secret, "***") if secret else message


def one_line(message: str, limit: int = 300) -> str:
    """A message squeezed onto one line, for a ConfigError the CLI prints as is."""
    flat = " ".join(message.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def preflight_message(model: str, exc: AdapterError, key_vars: tuple[str, ...]) -> str:
    """One line saying why the provider refused the preflight call, and what to check."""
    if exc.kind == "auth":
        return f"{model}: the API key was refused ({exc}); check {' / '.join(key_vars)}"
    if str(exc).startswith("HTTP 404"):
        return f"{model}: unknown model ({exc})"
    return f"{model}: the preflight request was rejected ({exc})"
