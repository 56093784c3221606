"""Chat Completions on the wire, as pure functions: a prompt to the JSON body (images as lossless data URLs,
placed into the encoded body without a second JSON pass), a response to a Completion, an SDK error to an
AdapterError of the right kind (keys scrubbed, connection failures told apart), and the preset's settings.

Not an adapter (no ``create``), so it has no line in the ADAPTERS table.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import openai
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict

from model_adapters._wire import one_line, retry_after_s
from u2eval.errors import AdapterError
from u2eval.models.protocol import ModelRequest
from u2eval.records import (
    Completion,
    GenerationConfig,
    ImagePart,
    ImageSent,
    Prompt,
    TextPart,
    Usage,
    short_hash,
)

PLACEHOLDER_KEY = "EMPTY"  # what vLLM's and SGLang's docs use for a server without --api-key
BIG_IMAGE_BYTES = 2_000_000  # base64 of a larger image is encoded on a worker thread (~5 ms per 2 MB)


_SLOT = "\x00u2eval-image-"  # stands in for a data URL while the rest of the body is JSON-encoded


_SLOT_JSON = json.dumps(_SLOT)[1:-1]


class OpenAISettings(BaseModel):
    """The preset's ``extra`` for this adapter; an unknown key is an error, not silently ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_key_env: str = "OPENAI_API_KEY"
    api_key_optional: bool = False
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    omit: tuple[Literal["temperature", "top_p", "seed", "max_tokens"], ...] = ()
    image_detail: Literal["high", "low", "auto"] | None = None
    extra_body: dict[str, Any] = {}

    def wire_identity(self) -> str | None:
        """A short hash of the settings that change what the model is asked; None when all are default."""
        fields = {"omit": sorted(self.omit), "image_detail": self.image_detail, "extra_body": self.extra_body}
        if not self.omit and self.image_detail is None and not self.extra_body:
            return None
        return "wire-" + short_hash(json.dumps(fields, sort_keys=True).encode(), 8)


DEFAULT_SETTINGS = OpenAISettings()


def data_url(image: ImagePart) -> str:
    """The image, byte for byte, as a ``data:`` URL of its own media type."""
    return f"data:{image.media_type};base64,{image.base64_text()}"


def _build(
    prompt: Prompt,
    config: GenerationConfig,
    model: str,
    settings: OpenAISettings,
    url_of: Callable[[ImagePart], str],
) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    for part in prompt.parts:
        if isinstance(part, TextPart):
            parts.append({"type": "text", "text": part.text})
        else:
            image_url: dict[str, str] = {"url": url_of(part)}
            if settings.image_detail is not None:
                image_url["detail"] = settings.image_detail
            parts.append({"type": "image_url", "image_url": image_url})
    messages: list[dict[str, Any]] = []
    if prompt.system:
        messages.append({"role": "system", "content": prompt.system})
    messages.append({"role": "user", "content": parts})
    body: dict[str, Any] = {"model": model, "messages": messages}
    sampling: dict[str, Any] = {"temperature": config.temperature, "top_p": config.top_p, "seed": config.seed}
    for name, value in sampling.items():
        if value is not None and name not in settings.omit:
            body[name] = value
    if "max_tokens" not in settings.omit:
        body[settings.max_tokens_param] = config.max_tokens
    body.update(settings.extra_body)
    return body


def to_request(
    prompt: Prompt, config: GenerationConfig, model: str, settings: OpenAISettings = DEFAULT_SETTINGS
) -> dict[str, Any]:
    """The Chat Completions request body for one prompt."""
    return _build(prompt, config, model, settings, data_url)


def encode_request(
    prompt: Prompt, config: GenerationConfig, model: str, settings: OpenAISettings = DEFAULT_SETTINGS
) -> bytes:
    """``to_request`` as the JSON bytes sent, built with one copy of each image's base64.

    Each data URL is left out while the rest is JSON-encoded, then spliced in as bytes: base64 needs no
    escaping, and the encoder would otherwise scan ~300 KB character by character (~0.7 ms), plus a copy
    per string concatenation (~0.1 ms each at this size).
    """
    images: list[ImagePart] = []

    def slot(image: ImagePart) -> str:
        images.append(image)
        return f"{_SLOT}{len(images) - 1}\x00"

    text = json.dumps(_build(prompt, config, model, settings, slot), ensure_ascii=False, separators=(",", ":"))
    pieces = text.split('"' + _SLOT_JSON)
    chunks = [pieces[0].encode()]
    for piece in pieces[1:]:
        index, _, tail = piece.partition('\\u0000"')
        image = images[int(index)]
        media_type = json.dumps(image.media_type, ensure_ascii=False)[1:-1].encode()
        chunks += [b'"data:', media_type, b";base64,", image.base64_text().encode("ascii"), b'"', tail.encode()]
    return b"".join(chunks)


def image_sent(prompt: Prompt) -> ImageSent | None:
    """Pixel size and bytes of the (first) image as sent: the original, never resized by this adapter."""
    image = next((p for p in prompt.parts if isinstance(p, ImagePart)), None)
    if image is None:
        return None
    try:
        with Image.open(io.BytesIO(image.data)) as decoded:  # reads the header only
            width, height = decoded.size
    except (UnidentifiedImageError, OSError):
        width = height = 0
    return ImageSent(width=width, height=height, bytes=len(image.data), media_type=image.media_type)


def _message_text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some servers answer with content parts
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return None


def from_response(raw: Any, request: ModelRequest) -> Completion:
    """A Chat Completions response body -> Completion: text, or ``refused`` / ``empty``; usage; image sent.

    A body that is not a chat completion at all raises ``AdapterError(malformed)``: that is the server's
    failure, retried, never the model's answer.
    """
    if isinstance(raw, dict) and "choices" not in raw and isinstance(raw.get("error"), dict):
        # Some proxies and servers answer an error with status 200: the server's failure, not an empty answer.
        detail = one_line(f"error in a 200 response: {raw['error'].get('message')}", 500)
        raise AdapterError(detail, kind="server", retryable=True)
    if not isinstance(raw, dict) or not isinstance(raw.get("choices"), list):
        raise AdapterError("the response is not a chat completion object", kind="malformed", retryable=True)
    common: dict[str, Any] = {
        "case_id": request.case.case_id,
        "key": request.key,
        "usage": _usage(raw.get("usage")),
        "image_sent": image_sent(request.prompt),
    }
    choices = raw.get("choices") or []
    choice = choices[0] if choices and isinstance(choices[0], dict) else None
    if choice is None:
        return Completion(**common, error="empty", error_message="the response has no choices")
    message = choice.get("message")
    if not isinstance(message, dict):
        message = {}
    finish = choice.get("finish_reason")
    common["finish_reason"] = finish if isinstance(finish, str) else None
    refusal = message.get("refusal")
    if refusal:
        return Completion(**common, error="refused", error_message=str(refusal)[:500])
    if finish == "content_filter":
        return Completion(**common, error="refused", error_message="stopped by the provider's content filter")
    text = _message_text(message.get("content"))
    if text is None or not text.strip():
        return Completion(**common, text=text, error="empty", error_message="the model returned no text")
    return Completion(**common, text=text)


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt_tokens, completion_tokens = raw.get("prompt_tokens"), raw.get("completion_tokens")
    cached = (raw.get("prompt_tokens_details") or {}).get("cached_tokens")
    reasoning = (raw.get("completion_tokens_details") or {}).get("reasoning_tokens")
    return Usage(
        input_tokens=prompt_tokens if isinstance(prompt_tokens, int) else None,
        output_tokens=completion_tokens if isinstance(completion_tokens, int) else None,
        cached_input_tokens=cached if isinstance(cached, int) and cached > 0 else None,
        reasoning_tokens=reasoning if isinstance(reasoning, int) and reasoning > 0 else None,
    )


_CONNECTION_FAILURES = frozenset(
    {"ServerDisconnectedError", "ClientOSError", "ClientConnectorError", "RemoteProtocolError", "ConnectError"}
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _connection_failure(exc: BaseException) -> BaseException | None:
    """The refused, reset or dropped connection behind ``exc``, however the transport wraps it (aiohttp's
    transport reports one as a connect *timeout*; the cause chain still holds what happened)."""
    found = None
    for link in _chain(exc):
        if isinstance(link, ConnectionError) or any(c.__name__ in _CONNECTION_FAILURES for c in type(link).__mro__):
            found = link  # the deepest one says most
    return found


def classify(exc: openai.OpenAIError, where: str, secret: str | None = None) -> AdapterError:
    """An SDK exception -> AdapterError with its kind, whether retrying may help, and the Retry-After."""
    message = scrub(one_line(f"{where}: {exc}", 500), secret)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        retry_after = retry_after_s(exc.response.headers)
        if status == 429:
            if exc.code == "insufficient_quota":  # no wait will help: the account is out of credit
                return AdapterError(message, kind="rate_limit", retryable=False)
            return AdapterError(message, kind="rate_limit", retryable=True, retry_after_s=retry_after)
        if status in (401, 403):
            return AdapterError(message, kind="auth", retryable=False)
        if status == 408:
            return AdapterError(message, kind="timeout", retryable=True, retry_after_s=retry_after)
        if status == 409 or status >= 500:
            return AdapterError(message, kind="server", retryable=True, retry_after_s=retry_after)
        return AdapterError(message, kind="bad_request", retryable=False)  # 400, 404 (model), 413, 422, ...
    if isinstance(exc, openai.APIConnectionError):  # APITimeoutError included
        cause = _connection_failure(exc)
        if cause is not None:
            detail = scrub(one_line(f"{where}: connection failed: {type(cause).__name__}: {cause}", 500), secret)
            return AdapterError(detail, kind="connection", retryable=True)
        kind = "timeout" if isinstance(exc, openai.APITimeoutError) else "connection"
        return AdapterError(message, kind=kind, retryable=True)
    return AdapterError(message, kind="malformed", retryable=True)


def scrub(text: str, secret: str | None) -> str:
    """``text`` without the key (an error body or URL may echo it)."""
    if secret and secret != PLACEHOLDER_KEY and len(secret) >= 4:
        text = text.replace(secret, "***")
    return text


def public_url(url: str) -> str:
    """A URL without credentials or query, fit to print."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
