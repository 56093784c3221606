"""OpenAI Chat Completions, and every server that speaks it (vLLM serve, SGLang, LMDeploy, DashScope, Ark).

``openai/<model>``, or a preset naming ``adapter: openai``. The endpoint is ``--base-url`` (several,
comma-separated, for data-parallel servers), else the preset's ``base_url``, else ``OPENAI_BASE_URL``, else
OpenAI's. The key is read from the environment only, from the variable the preset names
(``extra.api_key_env``, default ``OPENAI_API_KEY``); a local server (loopback address, or
``extra.api_key_optional``) gets the placeholder ``EMPTY`` when that variable is unset.

Preset ``extra`` (all optional): ``api_key_env``, ``api_key_optional``, ``max_tokens_param`` (``max_tokens``
or ``max_completion_tokens``, which OpenAI's reasoning models require), ``omit`` (generation fields the model
rejects, e.g. ``[temperature, top_p]``), ``image_detail`` (``high``/``low``/``auto``), ``extra_body`` (more
JSON fields, e.g. vLLM's ``top_k``). Those that change what the model is asked go into the model identity
(``ModelInfo.revision``), so stored answers are never reused across them.

The wire: one user message (a system message first when the prompt has one), its parts in the prompt's
order; images as ``data:`` URLs in their original encoding and media type (lossless). ``to_request`` and
``from_response`` are pure. The call goes through the SDK's ``AsyncOpenAI`` (its auth, base URL, errors and
transport; aiohttp when installed) with ``max_retries=0``, since the dispatcher retries. The body is sent as
JSON bytes built here, once per attempt, through the client's generic ``post``: the typed
``chat.completions.create`` walks every field of the body (and JSON-encodes the ~300 KB image string
character by character), about 1.5 ms of CPU per request, which caps throughput at high concurrency.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import itertools
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import openai
from pydantic import ValidationError

from model_adapters._base import Identified
from model_adapters._wire import backstop_timeout_s
from model_adapters.openai_batch import LIMITS, OpenAIBatches, batch_line
from model_adapters.openai_convert import (
    BIG_IMAGE_BYTES,
    PLACEHOLDER_KEY,
    OpenAISettings,
    classify,
    encode_request,
    from_response,
    public_url,
)
from u2eval.errors import AdapterError, ConfigError
from u2eval.models.protocol import AdapterOptions, BatchLimits, BatchStatus, ModelRequest
from u2eval.records import (
    Completion,
    GenerationConfig,
    ImagePart,
    ModelInfo,
    Prompt,
    TextPart,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_DOWN_FOR_S = 5.0  # an endpoint that refused or dropped a connection is avoided this long
# A 32x32 mid-grey PNG: the preflight's image, so a model that takes no images fails before any case.
_PROBE_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAACAAAAAgCAAAAABWESUoAAAAGElEQVR42mNsYMAPmBhGFYwqGFUwQhUAAJe+AMD8WknZAAAAAElFTkSuQmCC"
)


# -- pure converters ---------------------------------------------------------------------------------------


# -- errors ------------------------------------------------------------------------------------------------


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- the adapter -------------------------------------------------------------------------------------------


@dataclass
class _Endpoint:
    url: str  # as printed: no credentials
    client: openai.AsyncOpenAI
    in_flight: int = 0
    down_until: float = 0.0


def _client(base_url: str, api_key: str, timeout_s: float) -> openai.AsyncOpenAI:
    """One SDK client per endpoint, reused for every request; aiohttp transport when installed."""
    http_client = None
    try:
        http_client = openai.DefaultAioHttpClient(timeout=timeout_s)
    except (AttributeError, RuntimeError):  # an SDK without it, or aiohttp not installed
        http_client = None
    return openai.AsyncOpenAI(
        api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s, http_client=http_client
    )


class OpenAIAdapter(Identified):
    """Chat Completions over one or more OpenAI-compatible endpoints, balanced by least in flight."""

    def __init__(self, model: str, options: AdapterOptions, settings: OpenAISettings, urls: Sequence[str]) -> None:
        if not model:
            raise ConfigError("openai needs a model id: openai/<model>, e.g. openai/gpt-4o-2024-08-06")
        self._model = model
        self._settings = settings
        self._generation = options.generation
        self._text_only = options.text_only
        self._key_env = settings.api_key_env
        key = os.environ.get(settings.api_key_env, "").strip()
        if not key:
            if not (settings.api_key_optional or all(_is_loopback(u) for u in urls)):
                raise ConfigError(
                    f"set {settings.api_key_env} to the API key for {', '.join(map(public_url, urls))} "
                    "(keys are read from the environment only)"
                )
            key = PLACEHOLDER_KEY
        self._key = key
        self._endpoints = [_Endpoint(public_url(u), _client(u, key, backstop_timeout_s(options))) for u in urls]
        self._turn = itertools.count()
        super().__init__(ModelInfo(adapter="openai", model=model, revision=settings.wire_identity()), 1)

    def _pick(self) -> _Endpoint:
        """Least in flight among the endpoints not recently refusing connections; ties in rotation."""
        now = time.monotonic()
        start = next(self._turn) % len(self._endpoints)
        ordered = self._endpoints[start:] + self._endpoints[:start]
        healthy = [e for e in ordered if e.down_until <= now] or ordered
        return min(healthy, key=lambda e: e.in_flight)

    async def _post(self, body: bytes, endpoint: _Endpoint | None = None) -> Any:
        endpoint = endpoint or self._pick()
        endpoint.in_flight += 1
        try:
            content = await endpoint.client.post(
                "/chat/completions",
                cast_to=bytes,
                content=body,
                options={"headers": {"Content-Type": "application/json"}},
            )
        except openai.OpenAIError as exc:
            error = classify(exc, endpoint.url, self._key)
            if error.kind == "connection":
                endpoint.down_until = time.monotonic() + _DOWN_FOR_S
            raise error from None  # the SDK's chain holds the request, and so the key: keep it out of logs
        finally:
            endpoint.in_flight -= 1
        try:
            return json.loads(content)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise AdapterError(
                f"{endpoint.url}: the response is not JSON ({exc})", kind="malformed", retryable=True
            ) from None

    def _body(self, prompt: Prompt, config: GenerationConfig) -> bytes:
        return encode_request(prompt, config, self._model, self._settings)

    async def _answer(self, request: ModelRequest) -> Completion:
        big = sum(len(p.data) for p in request.prompt.parts if isinstance(p, ImagePart)) > BIG_IMAGE_BYTES
        if big:  # keeps the event loop responsive; small ones cost less than the hop to a thread
            body = await asyncio.to_thread(self._body, request.prompt, self._generation)
        else:
            body = self._body(request.prompt, self._generation)
        started = time.perf_counter()
        raw = await self._post(body)
        completion = from_response(raw, request)
        return completion.model_copy(update={"latency_s": round(time.perf_counter() - started, 4)})

    async def generate(self, requests: Sequence[ModelRequest]) -> list[Completion]:
        if len(requests) == 1:
            return [await self._answer(requests[0])]
        return list(await asyncio.gather(*(self._answer(r) for r in requests)))

    async def preflight(self) -> None:
        """One tiny request per endpoint (a 32x32 image, one output token, the run's own parameters): a
        wrong key, an unknown model, a model without vision or a parameter the model rejects fails here. A
        text-only adapter (a judge) probes with text alone."""
        image = () if self._text_only else (ImagePart(_PROBE_PNG, "image/png"),)
        probe = Prompt("preflight", None, (*image, TextPart("Reply OK.")), "", "")
        config = self._generation.model_copy(update={"max_tokens": 1})
        body = self._body(probe, config)
        try:
            await asyncio.gather(*(self._post(body, endpoint) for endpoint in self._endpoints))
        except AdapterError as exc:
            if exc.kind != "auth":
                raise
            raise AdapterError(f"{exc} (the key comes from {self._key_env})", kind="auth", retryable=False) from None

    # -- the Batch API (u2eval run --batch; model_adapters.openai_batch) ------------------------------------

    def _batches(self) -> OpenAIBatches:
        if len(self._endpoints) > 1:
            raise ConfigError("--batch sends to one endpoint: give one --base-url")
        endpoint = self._endpoints[0]
        return OpenAIBatches(endpoint.client, endpoint.url, self._key)

    @property
    def batch_limits(self) -> BatchLimits:
        self._batches()
        return LIMITS

    def batch_item(self, request: ModelRequest) -> bytes:
        return batch_line(request.key, self._body(request.prompt, self._generation))

    async def submit_batch(self, items: Sequence[bytes], label: str) -> str:
        return await self._batches().submit(items, label)

    async def find_batch(self, label: str) -> str | None:
        return await self._batches().find(label)

    async def batch_status(self, batch_id: str) -> BatchStatus:
        return await self._batches().status(batch_id)

    async def batch_results(self, batch_id: str, requests: Mapping[str, ModelRequest]) -> list[Completion]:
        return await self._batches().results(batch_id, requests)

    async def aclose(self) -> None:
        await asyncio.gather(*(e.client.close() for e in self._endpoints))


def base_urls(option: str | None) -> list[str]:
    """The endpoints: the option (comma-separated for several), else OPENAI_BASE_URL, else OpenAI's."""
    raw = option or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    urls = [u.strip().rstrip("/") for u in raw.split(",") if u.strip()]
    for url in urls:
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise ConfigError(f"not an http(s) base URL: {public_url(url)!r}")
    return urls


def create(model: str, options: AdapterOptions) -> OpenAIAdapter:
    try:
        settings = OpenAISettings.model_validate(dict(options.extra))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"openai: invalid preset extra: {problems}") from None
    return OpenAIAdapter(model, options, settings, base_urls(options.base_url))
