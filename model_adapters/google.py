"""Gemini through the Gemini API (``google/<model>``), with the official ``google-genai`` SDK.

The prompt's parts go in order as one user turn, images inline in their original encoding unless the
preset's image budget says otherwise; the system text goes in ``system_instruction``. The SDK's own
retries are off (``HttpRetryOptions(attempts=1)``, which also stops its implicit sleep-and-retry on
aiohttp connection errors): the dispatcher retries. A safety block or an answer with no text is an
outcome of the case (``refused`` / ``empty``), never a crash. ``create`` gives the adapter with the Gemini
API's batch mode as well (``google_batch.py``, ``u2eval run --batch``).

Preset ``extra`` (all optional):
    image_budget     the provider's image limits (u2eval.models.images.ImageBudget); none: images sent as they are
    thinking_budget  ``ThinkingConfig.thinking_budget`` for thinking models (2.5 Pro cannot turn it off, and
                     thinking tokens count against ``max_output_tokens``)
    api_version      the API version in the path (``v1beta``, ``v1``); none: the SDK's default

The dispatcher times each attempt; the SDK's own timeout is only a backstop a little longer than that.
The key comes from GOOGLE_API_KEY or GEMINI_API_KEY (the SDK's order: GOOGLE_API_KEY wins when both are
set); the base URL from ``--base-url``, the preset, or GOOGLE_GEMINI_BASE_URL (read by the SDK).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from google import genai
from google.genai import errors as genai_errors
from google.genai import types
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
from u2eval.errors import AdapterError, ConfigError
from u2eval.models.images import ImageBudget, fit
from u2eval.models.protocol import AdapterOptions, ModelRequest
from u2eval.records import (
    Completion,
    ErrorKind,
    GenerationConfig,
    ImagePart,
    ImageSent,
    ModelInfo,
    Prompt,
    TextPart,
    Usage,
)

KEY_VARS = ("GOOGLE_API_KEY", "GEMINI_API_KEY")

# Finish reasons that mean a policy stopped the answer: the model's outcome 'refused', not an infra failure.
REFUSAL_FINISH = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "MODEL_ARMOR",
    }
)


def _transport_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(timeouts, connection failures) of the HTTP stacks the SDK may use: httpx2 (or httpx in older SDKs),
    and aiohttp, which it prefers when installed. aiohttp's timeouts are TimeoutErrors, so those go first."""
    timeouts: list[type[BaseException]] = [TimeoutError, asyncio.TimeoutError]
    connection: list[type[BaseException]] = []
    for name in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError):
            module = importlib.import_module(name)
            timeouts.append(module.TimeoutException)
            connection.append(module.TransportError)
    with contextlib.suppress(ImportError):
        connection.append(importlib.import_module("aiohttp").ClientError)
    return tuple(timeouts), tuple(connection)


_TIMEOUTS, _CONNECTION_ERRORS = _transport_errors()
# What a failed call can raise; anything else is a bug and propagates.
FAILURES: tuple[type[BaseException], ...] = (
    genai_errors.APIError,
    json.JSONDecodeError,
    genai_errors.UnknownApiResponseError,
    *_TIMEOUTS,
    *_CONNECTION_ERRORS,
)


class GoogleExtra(BaseModel):
    """The preset's ``extra`` for this adapter; a typo is an error, not a silent default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    image_budget: ImageBudget | None = None
    thinking_budget: int | None = None
    api_version: str | None = None


class WireRequest(NamedTuple):
    """The arguments of ``generate_content``, and what the image became on its way there."""

    model: str
    contents: list[types.Content]
    config: types.GenerateContentConfig
    image_sent: ImageSent | None


def to_request(
    prompt: Prompt,
    config: GenerationConfig,
    model: str,
    budget: ImageBudget | None = None,
    *,
    thinking_budget: int | None = None,
) -> WireRequest:
    """The ``generate_content`` call for one prompt (pure; images fitted to ``budget``)."""
    parts: list[types.Part] = []
    image_sent: ImageSent | None = None
    for part in prompt.parts:
        if isinstance(part, ImagePart):
            data, media_type, sent = fit(part.data, part.media_type, budget)
            image_sent = image_sent or sent  # U2-Bench has one image per case; the first is the one recorded
            parts.append(types.Part.from_bytes(data=data, mime_type=media_type))
        elif part.text:
            parts.append(types.Part.from_text(text=part.text))
    generation = types.GenerateContentConfig(
        system_instruction=prompt.system or None,
        temperature=config.temperature,
        top_p=config.top_p,
        max_output_tokens=config.max_tokens,
        seed=config.seed,
        thinking_config=types.ThinkingConfig(thinking_budget=thinking_budget) if thinking_budget is not None else None,
    )
    return WireRequest(model, [types.Content(role="user", parts=parts)], generation, image_sent)


def request_json(request: WireRequest) -> dict[str, Any]:
    """A JSON view of a request (inline bytes as base64), for golden tests and logs."""
    return {
        "model": request.model,
        "contents": [c.model_dump(mode="json", exclude_none=True) for c in request.contents],
        "config": request.config.model_dump(mode="json", exclude_none=True),
    }


def _usage(response: types.GenerateContentResponse) -> Usage | None:
    meta = response.usage_metadata
    if meta is None:
        return None
    # Thinking tokens are billed as output, so they are counted as output here.
    produced = [n for n in (meta.candidates_token_count, meta.thoughts_token_count) if n is not None]
    return Usage(
        input_tokens=meta.prompt_token_count,
        output_tokens=sum(produced) if produced else None,
        cached_input_tokens=meta.cached_content_token_count or None,
        reasoning_tokens=meta.thoughts_token_count or None,
    )


def _name(value: object) -> str | None:
    """An SDK enum (or a string the SDK did not know) as its plain name."""
    if value is None:
        return None
    return str(getattr(value, "value", value))


def from_response(
    response: types.GenerateContentResponse,
    *,
    case_id: str,
    key: str,
    image_sent: ImageSent | None = None,
    latency_s: float = 0.0,
) -> Completion:
    """A Completion from a generate_content response: the first candidate's text, thoughts left out; a
    safety block is 'refused', no candidate or no text is 'empty'."""
    common: dict[str, Any] = {
        "case_id": case_id,
        "key": key,
        "usage": _usage(response),
        "latency_s": round(latency_s, 4),
        "image_sent": image_sent,
    }
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        reason = _name(feedback.block_reason)
        return Completion(**common, error="refused", error_message=f"prompt blocked: {reason}", finish_reason=reason)
    if not response.candidates:
        return Completion(**common, error="empty", error_message="no candidates in the response")
    candidate = response.candidates[0]
    finish = _name(candidate.finish_reason)
    parts = candidate.content.parts if candidate.content is not None and candidate.content.parts else []
    text = "".join(p.text for p in parts if p.text and not p.thought)
    error: ErrorKind | None = None
    detail = None
    if finish in REFUSAL_FINISH:
        error, detail = "refused", f"finish_reason {finish}"
    elif not text.strip():
        error, detail = "empty", f"no text in the response (finish_reason {finish})"
    return Completion(
        **common,
        text=text if error is None else (text or None),
        error=error,
        error_message=detail,
        finish_reason=finish,
    )


def _error_info(details: object) -> tuple[set[str], float | None]:
    """(ErrorInfo reasons, RetryInfo delay in seconds) from a google.rpc error's details."""
    error = details.get("error", details) if isinstance(details, Mapping) else None
    items = error.get("details") if isinstance(error, Mapping) else None
    reasons: set[str] = set()
    delay = None
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, Mapping):
            continue
        if isinstance(item.get("reason"), str):
            reasons.add(item["reason"])
        retry_delay = item.get("retryDelay")
        if isinstance(retry_delay, str) and retry_delay.endswith("s"):
            with contextlib.suppress(ValueError):
                delay = float(retry_delay[:-1])
    return reasons, delay


def classify(exc: BaseException, secret: str = "") -> AdapterError:
    """The dispatcher's view of a failed SDK call (one of FAILURES): its kind, whether to retry, and how long
    the server said to wait."""
    if isinstance(exc, genai_errors.APIError):
        code = exc.code
        message = redact(one_line(f"HTTP {code} {exc.status or ''}: {exc.message or exc.details}"), secret)
        reasons, delay = _error_info(exc.details)
        headers = getattr(exc.response, "headers", None)
        wait = retry_after_s(headers if isinstance(headers, Mapping) else None)
        wait = wait if wait is not None else delay
        if code == 429:
            return AdapterError(message, kind="rate_limit", retryable=True, retry_after_s=wait)
        if code in (408, 504):
            return AdapterError(message, kind="timeout", retryable=True, retry_after_s=wait)
        if code >= 500:
            return AdapterError(message, kind="server", retryable=True, retry_after_s=wait)
        if code in (401, 403) or "API_KEY_INVALID" in reasons:  # a wrong key is a 400 on this API
            return AdapterError(message, kind="auth", retryable=False)
        return AdapterError(message, kind="bad_request", retryable=False)  # 400, 404 (unknown model), ...
    if isinstance(exc, _TIMEOUTS):
        return AdapterError("request timed out", kind="timeout", retryable=True)
    if isinstance(exc, _CONNECTION_ERRORS):
        text = redact(one_line(f"connection failed: {type(exc).__name__}: {exc}"), secret)
        return AdapterError(text, kind="connection", retryable=True)
    # json.JSONDecodeError, UnknownApiResponseError: a 200 whose body is not JSON
    return AdapterError(redact(one_line(f"unreadable response: {exc}"), secret), kind="malformed", retryable=True)


class GoogleAdapter(Identified):
    def __init__(self, model: str, options: AdapterOptions) -> None:
        if not model:
            raise ConfigError("google needs a model: google/<model>, e.g. google/gemini-2.5-pro")
        try:
            extra = GoogleExtra.model_validate(dict(options.extra))
        except ValidationError as exc:
            raise ConfigError(f"google preset extra: {one_line(str(exc))}") from exc
        self._model = model.removeprefix("models/")
        self._extra = extra
        self._generation = options.generation
        self._key = api_key("google", KEY_VARS)
        http_options = types.HttpOptions(
            base_url=options.base_url,
            api_version=extra.api_version,
            timeout=round(backstop_timeout_s(options) * 1000),  # milliseconds
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        self._client = genai.Client(vertexai=False, api_key=self._key, http_options=http_options)
        parts = [] if extra.api_version is None else [f"api-version={extra.api_version}"]
        if extra.thinking_budget is not None:
            parts.append(f"thinking-budget={extra.thinking_budget}")
        if extra.image_budget is not None:
            parts.append(f"image-budget={extra.image_budget.signature()}")
        super().__init__(ModelInfo(adapter="google", model=self._model, revision=" ".join(parts) or None), 1)

    async def _call(self, request: WireRequest) -> types.GenerateContentResponse:
        try:
            return await self._client.aio.models.generate_content(
                model=request.model, contents=request.contents, config=request.config
            )
        except FAILURES as exc:
            raise classify(exc, self._key) from None  # `from None`: the SDK's request object stays out of logs

    async def generate(self, requests: Sequence[ModelRequest]) -> list[Completion]:
        extra = self._extra

        def build(request: ModelRequest) -> WireRequest:
            budget, thinking = extra.image_budget, extra.thinking_budget
            return to_request(request.prompt, self._generation, self._model, budget, thinking_budget=thinking)

        def read(
            response: types.GenerateContentResponse, request: ModelRequest, wire: WireRequest, latency_s: float
        ) -> Completion:
            case_id, key = request.case.case_id, request.key
            return from_response(response, case_id=case_id, key=key, image_sent=wire.image_sent, latency_s=latency_s)

        return await one_by_one(requests, build, self._call, read)

    async def preflight(self) -> None:
        """One small text-only request with the run's settings: a wrong key, an unknown model or a rejected
        setting stops the run with one line before any case is spent. Transient failures are raised as they are."""
        prompt = Prompt(
            case_id="preflight", system=None, parts=(TextPart("Reply with OK."),), template="", template_sha256=""
        )
        request = to_request(prompt, self._generation, self._model, thinking_budget=self._extra.thinking_budget)
        try:
            await self._call(request)
        except AdapterError as exc:
            if exc.retryable:
                raise
            raise ConfigError(preflight_message(f"google/{self._model}", exc, KEY_VARS)) from None

    async def aclose(self) -> None:
        await self._client.aio.aclose()
        self._client.close()


def create(model: str, options: AdapterOptions) -> GoogleAdapter:
    # The adapter with the Gemini API's batch mode (google_batch.py builds on this module, hence the late import).
    from model_adapters.google_batch import GoogleBatchAdapter

    return GoogleBatchAdapter(model, options)
