"""Claude through the Anthropic Messages API (``anthropic/<model>``), with the official ``anthropic`` SDK.

The system prompt goes in the top-level ``system`` field; the user turn is the prompt's parts in order,
images as base64 blocks in their original encoding unless the preset's image budget says otherwise. The
SDK's own retries are off (``max_retries=0``): the dispatcher retries, and every failure leaves here as an
``AdapterError`` with a kind.

Preset ``extra`` (all optional):
    image_budget   the provider's image limits (u2eval.models.images.ImageBudget); none: images sent as they are
    api_version    the ``anthropic-version`` header; none: the SDK's default
    sampling       send ``temperature`` / ``top_p`` (default false: API version 2026-10-21, the SDK's
                   default, rejects them, and so do the newest models on any version)

The Message Batches API (``u2eval run --batch``) is ``model_adapters/anthropic_batch.py``: the same bodies, read
by the same ``from_response``.

The dispatcher times each attempt; the SDK's own timeout is only a backstop a little longer than that.
The key comes from ANTHROPIC_API_KEY only; the base URL from ``--base-url``, the preset, or
ANTHROPIC_BASE_URL (read by the SDK).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import anthropic
from anthropic.types import Message
from pydantic import BaseModel, ConfigDict, ValidationError

from model_adapters._base import Identified
from model_adapters._wire import (
    api_key,
    backstop_timeout_s,
    one_by_one,
    one_line,
    preflight_message,
    redact,
    retry_after_s,
)
from model_adapters.anthropic_batch import AnthropicBatches
from u2eval.errors import AdapterError, ConfigError
from u2eval.models.images import ImageBudget, fit
from u2eval.models.protocol import AdapterOptions, ModelRequest
from u2eval.records import Completion, ErrorKind, GenerationConfig, ImagePart, ImageSent, ModelInfo, Prompt, Usage

KEY_VARS = ("ANTHROPIC_API_KEY",)


class AnthropicExtra(BaseModel):
    """The preset's ``extra`` for this adapter; a typo is an error, not a silent default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    image_budget: ImageBudget | None = None
    api_version: str | None = None
    sampling: bool = False


class WireRequest(NamedTuple):
    """The Messages API body, and what the image became on its way there."""

    body: dict[str, Any]
    image_sent: ImageSent | None


def to_request(
    prompt: Prompt,
    config: GenerationConfig,
    model: str,
    budget: ImageBudget | None = None,
    *,
    sampling: bool = False,
) -> WireRequest:
    """The JSON body of ``POST /v1/messages`` for one prompt (pure; images fitted to ``budget``)."""
    content: list[dict[str, Any]] = []
    image_sent: ImageSent | None = None
    for part in prompt.parts:
        if isinstance(part, ImagePart):
            data, media_type, sent = fit(part.data, part.media_type, budget)
            image_sent = image_sent or sent  # U2-Bench has one image per case; the first is the one recorded
            text = part.base64_text() if data is part.data else base64.b64encode(data).decode("ascii")
            source = {"type": "base64", "media_type": media_type, "data": text}
            content.append({"type": "image", "source": source})
        elif part.text:  # the API rejects empty text blocks
            content.append({"type": "text", "text": part.text})
    # Keys in the order the SDK writes a live request's body (sampling last: it travels as extra body), so that
    # a batch item's params (anthropic_batch.py) are the very bytes a live request sends.
    body: dict[str, Any] = {
        "max_tokens": config.max_tokens,
        "messages": [{"role": "user", "content": content}],
        "model": model,
    }
    if prompt.system:
        body["system"] = prompt.system
    if sampling:
        body["temperature"] = config.temperature
        if config.top_p != 1.0:  # 1.0 is the API default, and newer models refuse temperature with top_p
            body["top_p"] = config.top_p
    return WireRequest(body, image_sent)


def _usage(message: Message) -> Usage:
    """Input counts every input token: those written to and read from the prompt cache are reported apart."""
    reported = message.usage
    read = getattr(reported, "cache_read_input_tokens", None) or 0
    written = getattr(reported, "cache_creation_input_tokens", None) or 0
    return Usage(
        input_tokens=reported.input_tokens + read + written,
        output_tokens=reported.output_tokens,
        cached_input_tokens=read or None,
    )


def from_response(
    message: Message, *, case_id: str, key: str, image_sent: ImageSent | None = None, latency_s: float = 0.0
) -> Completion:
    """A Completion from a Messages API response: text blocks joined; a refusal or no text is an outcome."""
    text = "".join(block.text for block in message.content if block.type == "text")
    usage = _usage(message)
    error: ErrorKind | None = None
    detail = None
    if message.stop_reason == "refusal":
        error, detail = "refused", "stop_reason refusal"
    elif not text.strip():
        error, detail = "empty", f"no text in the response (stop_reason {message.stop_reason})"
    return Completion(
        case_id=case_id,
        key=key,
        text=text if error is None else (text or None),
        error=error,
        error_message=detail,
        finish_reason=message.stop_reason,
        usage=usage,
        latency_s=round(latency_s, 4),
        image_sent=image_sent,
    )


def classify(exc: anthropic.AnthropicError, secret: str = "") -> AdapterError:
    """The dispatcher's view of an SDK error: its kind, whether to retry, and how long the server said to wait."""
    if isinstance(exc, anthropic.APITimeoutError):
        return AdapterError("request timed out", kind="timeout", retryable=True)
    if isinstance(exc, anthropic.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = f": {type(cause).__name__}: {cause}" if cause is not None else ""
        return AdapterError(redact(one_line(f"connection failed{detail}"), secret), kind="connection", retryable=True)
    if not isinstance(exc, anthropic.APIStatusError):  # e.g. a 200 whose body is not a Message
        return AdapterError(redact(one_line(f"unreadable response: {exc}"), secret), kind="malformed", retryable=True)
    status = exc.status_code
    # api_message / type: the error body's message and type (SDK 2.x), else the SDK's own text.
    detail = getattr(exc, "api_message", None) or (exc.body if isinstance(exc.body, str) else None) or exc.message
    message = redact(one_line(f"HTTP {status} {getattr(exc, 'type', None) or ''}: {detail}"), secret)
    wait = retry_after_s(exc.response.headers)
    if status == 429:
        return AdapterError(message, kind="rate_limit", retryable=True, retry_after_s=wait)
    if status == 408:
        return AdapterError(message, kind="timeout", retryable=True, retry_after_s=wait)
    if status >= 500 or status == 409:  # 529 overloaded included; 409 is a conflict the SDK would retry
        return AdapterError(message, kind="server", retryable=True, retry_after_s=wait)
    if status in (401, 403):
        return AdapterError(message, kind="auth", retryable=False)
    return AdapterError(message, kind="bad_request", retryable=False)  # 400, 404 (unknown model), 413, ...


class AnthropicAdapter(AnthropicBatches, Identified):
    def __init__(self, model: str, options: AdapterOptions) -> None:
        if not model:
            raise ConfigError("anthropic needs a model: anthropic/<model>, e.g. anthropic/claude-sonnet-4-5-20250929")
        try:
            extra = AnthropicExtra.model_validate(dict(options.extra))
        except ValidationError as exc:
            raise ConfigError(f"anthropic preset extra: {one_line(str(exc))}") from exc
        self._model = model
        self._extra = extra
        self._generation = options.generation
        self._key = api_key("anthropic", KEY_VARS)
        headers = {"anthropic-version": extra.api_version} if extra.api_version else None
        self._client = anthropic.AsyncAnthropic(
            api_key=self._key,
            base_url=options.base_url,
            max_retries=0,
            timeout=backstop_timeout_s(options),
            default_headers=headers,
        )
        version = extra.api_version or "sdk-default"
        parts = [f"anthropic-version={version}", f"sampling={'sent' if extra.sampling else 'not-sent'}"]
        if extra.image_budget is not None:
            parts.append(f"image-budget={extra.image_budget.signature()}")
        super().__init__(ModelInfo(adapter="anthropic", model=model, revision=" ".join(parts)), 1)

    async def _create(self, body: dict[str, Any]) -> Message:
        # temperature / top_p are no longer parameters of the SDK (API 2026-10-21): they travel as extra body.
        sampling = {k: body[k] for k in ("temperature", "top_p") if k in body}
        kwargs = {k: v for k, v in body.items() if k not in sampling}
        try:
            message: Message = await self._client.messages.create(**kwargs, extra_body=sampling or None)
        except anthropic.AnthropicError as exc:
            raise classify(exc, self._key) from None  # `from None`: the SDK's request object stays out of logs
        except json.JSONDecodeError as exc:  # the SDK parses a 200's body without catching this
            raise AdapterError(f"response is not JSON: {exc}", kind="malformed", retryable=True) from None
        return message

    # The live path's pieces, which a batch (anthropic_batch.AnthropicBatches) uses as they are.
    def _build(self, request: ModelRequest) -> WireRequest:
        extra = self._extra
        return to_request(request.prompt, self._generation, self._model, extra.image_budget, sampling=extra.sampling)

    def _read(self, message: Message, request: ModelRequest, image_sent: ImageSent | None) -> Completion:
        return from_response(message, case_id=request.case.case_id, key=request.key, image_sent=image_sent)

    def _classify(self, exc: anthropic.AnthropicError) -> AdapterError:
        return classify(exc, self._key)

    async def generate(self, requests: Sequence[ModelRequest]) -> list[Completion]:
        build = self._build

        async def send(wire: WireRequest) -> Message:
            return await self._create(wire.body)

        def read(message: Message, request: ModelRequest, wire: WireRequest, latency_s: float) -> Completion:
            case_id, key = request.case.case_id, request.key
            return from_response(message, case_id=case_id, key=key, image_sent=wire.image_sent, latency_s=latency_s)

        return await one_by_one(requests, build, send, read)

    async def preflight(self) -> None:
        """One tiny request with the run's settings: a wrong key, an unknown model or a rejected parameter
        stops the run with one line before any case is spent. Transient failures are raised as they are."""
        body: dict[str, Any] = {
            "model": self._model,
            "max_tokens": 1,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Reply with OK."}]}],
        }
        if self._extra.sampling:
            body["temperature"] = self._generation.temperature
        try:
            await self._create(body)
        except AdapterError as exc:
            if exc.retryable:
                raise
            raise ConfigError(preflight_message(f"anthropic/{self._model}", exc, KEY_VARS)) from None

    async def aclose(self) -> None:
        await self._client.close()


def create(model: str, options: AdapterOptions) -> AnthropicAdapter:
    return AnthropicAdapter(model, options)
