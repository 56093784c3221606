"""A stand-in for ``vllm.LLM``: ``LLM.chat``'s exact signature, vLLM's output types, no GPU.

It does what vLLM does around the model: takes one conversation or a list of them, checks every message and
decodes every image (data URLs, base64 then the image codec) before generating anything, refuses the whole
call with a ValueError when one input is bad, applies ``max_tokens`` (finish_reason 'length'), and returns one
``RequestOutput`` per conversation, in order. The "model" answers like a guessing baseline from what it sees:
an option from the prompt's own option list (or a number), chosen by a hash of the text and the image pixels,
so the answer does not depend on which chunk, batch or engine a conversation lands in.

Failures on demand: at ``fail_at`` (the n-th conversation overall, 0-based), after ``fail_delay_s``, mid-call,
the process dies (``exit_code``: ``os._exit``, as under ``kill -9``) or the engine raises ``failure`` (default: a
CUDA error, as from a dead engine) on that call and every later one; ``reject`` refuses conversations the way
vLLM refuses a prompt longer than ``max_model_len``.

``standin_run`` runs u2eval on the bundled sample with this engine (the crash test calls it in a subprocess).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from model_adapters._local import parse_settings
from model_adapters.vllm import Engine, LoraSettings, VLLMAdapter, VLLMSettings
from u2eval.models.protocol import AdapterOptions
from u2eval.records import GenerationConfig
from u2eval.run.runner import RunOptions, RunResult, run

MODEL = "standin/vlm-7b"


@dataclass
class SamplingParams:
    """The fields of ``vllm.SamplingParams`` the adapter sets, with vLLM's defaults."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = 16
    seed: int | None = None


@dataclass
class CompletionOutput:
    """``vllm.outputs.CompletionOutput``."""

    index: int
    text: str
    token_ids: Sequence[int]
    cumulative_logprob: float | None
    logprobs: Any
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    lora_request: Any = None


class RequestOutput:
    """``vllm.outputs.RequestOutput`` (its constructor's parameters, in its order)."""

    def __init__(
        self,
        request_id: str,
        prompt: str | None,
        prompt_token_ids: list[int] | None,
        prompt_logprobs: Any,
        outputs: list[CompletionOutput],
        finished: bool,
        metrics: Any = None,
        lora_request: Any = None,
        encoder_prompt: str | None = None,
        encoder_prompt_token_ids: list[int] | None = None,
        num_cached_tokens: int | None = None,
    ) -> None:
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_token_ids = prompt_token_ids
        self.prompt_logprobs = prompt_logprobs
        self.outputs = outputs
        self.finished = finished
        self.metrics = metrics
        self.lora_request = lora_request
        self.encoder_prompt = encoder_prompt
        self.encoder_prompt_token_ids = encoder_prompt_token_ids
        self.num_cached_tokens = num_cached_tokens


_DATA_URL = re.compile(r"^data:(image/[a-z0-9.+-]+);base64,(.*)$", re.DOTALL)
_OPTIONS = re.compile(r"^Options: (.*)$", re.MULTILINE)
IMAGE_TOKENS = 64  # what one image counts for in prompt_token_ids


@dataclass
class Decoded:
    """What the stand-in read from one conversation: its text, and each image's media type and bytes."""

    text: str
    images: list[tuple[str, bytes]]


def decode_conversation(conversation: list[dict[str, Any]]) -> Decoded:
    """Read a conversation as vLLM's chat parser would; a malformed one is a ValueError."""
    texts: list[str] = []
    images: list[tuple[str, bytes]] = []
    for message in conversation:
        if message.get("role") not in ("system", "user", "assistant"):
            raise ValueError(f"unknown role {message.get('role')!r}")
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
            continue
        for part in content or []:
            if part.get("type") == "text":
                texts.append(part["text"])
            elif part.get("type") == "image_url":
                match = _DATA_URL.match(part["image_url"]["url"])
                if match is None:
                    raise ValueError("only data: URLs are read here")
                try:
                    data = base64.b64decode(match.group(2), validate=True)
                except binascii.Error as exc:
                    raise ValueError(f"bad base64 image: {exc}") from exc
                images.append((match.group(1), data))
            else:
                raise ValueError(f"unknown content part type {part.get('type')!r}")
    return Decoded("\n".join(texts), images)


def answer(decoded: Decoded) -> str:
    """The stand-in model's answer: a pure function of the text and the image pixels."""
    digest = hashlib.sha256(decoded.text.encode())
    for _, data in decoded.images:
        with Image.open(io.BytesIO(data)) as img:  # decoding the pixels, as a vision encoder must
            digest.update(img.convert("RGB").tobytes())
    value = int(digest.hexdigest()[:8], 16)
    options = _OPTIONS.search(decoded.text)
    if options is not None:
        choices = re.findall(r"'([^']*)'", options.group(1))
        if choices:
            return choices[value % len(choices)]
    return str(value % 100)


@dataclass
class StandinLLM:
    """``vllm.LLM`` as the adapter uses it. ``calls`` records (conversations, sampling params, chat template,
    LoRA request) per call; ``answered`` counts the conversations answered."""

    model: str
    engine_args: dict[str, Any] = field(default_factory=dict)
    fail_at: int | None = None
    failure: BaseException | None = None
    exit_code: int | None = None
    fail_delay_s: float = 0.0
    reject: Callable[[Decoded], bool] | None = None
    delay_s: float = 0.0
    calls: list[tuple[int, SamplingParams, str | None, Any]] = field(default_factory=list)
    conversations: list[list[dict[str, Any]]] = field(default_factory=list)
    answered: int = 0
    _seen: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def chat(
        self,
        messages: list[dict[str, Any]] | list[list[dict[str, Any]]],
        sampling_params: SamplingParams | list[SamplingParams] | None = None,
        use_tqdm: bool | Callable[..., Any] = True,
        lora_request: Any = None,
        chat_template: str | None = None,
        chat_template_content_format: str = "auto",
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        tools: list[dict[str, Any]] | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
        mm_processor_kwargs: dict[str, Any] | None = None,
    ) -> list[RequestOutput]:
        if not self._lock.acquire(blocking=False):  # vllm.LLM is not safe to call from two threads at once
            raise RuntimeError("LLM.chat called concurrently")
        try:
            return self._chat(messages, sampling_params, lora_request, chat_template)
        finally:
            self._lock.release()

    def _chat(
        self, messages: Any, sampling_params: Any, lora_request: Any, chat_template: str | None
    ) -> list[RequestOutput]:
        conversations = messages if messages and isinstance(messages[0], list) else [messages]
        params = sampling_params if isinstance(sampling_params, SamplingParams) else SamplingParams()
        self.calls.append((len(conversations), params, chat_template, lora_request))
        limit = (self.engine_args.get("limit_mm_per_prompt") or {}).get("image", 1)
        decoded = []
        for conversation in conversations:  # every input is checked before anything is generated
            read = decode_conversation(conversation)
            if len(read.images) > limit:
                raise ValueError(f"at most {limit} image(s) per prompt, got {len(read.images)}")
            for _, data in read.images:
                try:
                    Image.open(io.BytesIO(data)).verify()
                except (OSError, SyntaxError) as exc:
                    raise ValueError(f"cannot read the image: {exc}") from exc
            if self.reject is not None and self.reject(read):
                raise ValueError("The decoder prompt is longer than the maximum model length")
            decoded.append(read)
        time.sleep(self.delay_s)
        outputs = []
        for number, (conversation, read) in enumerate(zip(conversations, decoded, strict=True)):
            if self.fail_at is not None and self._seen >= self.fail_at:
                time.sleep(self.fail_delay_s)
                if self.exit_code is not None:
                    os._exit(self.exit_code)
                raise self.failure or RuntimeError("CUDA error: an illegal memory access was encountered")
            self._seen += 1
            words = answer(read).split(" ")
            limit_tokens = params.max_tokens if params.max_tokens is not None else len(words)
            finish = "length" if len(words) > limit_tokens else "stop"
            kept = " ".join(words[:limit_tokens])
            prompt_ids = list(range(len(read.text.split()) + IMAGE_TOKENS * len(read.images)))
            outputs.append(
                RequestOutput(
                    request_id=str(number),
                    prompt=None,
                    prompt_token_ids=prompt_ids,
                    prompt_logprobs=None,
                    outputs=[CompletionOutput(0, kept, list(range(min(len(words), limit_tokens))), None, None, finish)],
                    finished=True,
                )
            )
            self.conversations.append(conversation)
        self.answered += len(outputs)
        return outputs


@dataclass
class StandinFactory:
    """An engine factory for ``VLLMAdapter``: builds StandinLLMs with ``options`` and keeps them."""

    options: dict[str, Any] = field(default_factory=dict)
    engines: list[StandinLLM] = field(default_factory=list)
    lora_requests: list[Any] = field(default_factory=list)

    def __call__(self, model: str, engine_args: dict[str, Any], lora: LoraSettings | None) -> Engine:
        llm = StandinLLM(model, dict(engine_args), **self.options)
        self.engines.append(llm)
        lora_request = ("lora", lora.name, lora.subfolder) if lora is not None else None
        return Engine(llm, SamplingParams, lora_request)

    @property
    def llm(self) -> StandinLLM:
        assert len(self.engines) == 1, f"{len(self.engines)} engines were built"
        return self.engines[0]


def standin_adapter(factory: StandinFactory, chunk: int = 256, **extra: Any) -> VLLMAdapter:
    settings = parse_settings("vllm", {"chunk_size": chunk, "engine": {"dtype": "bfloat16"}, **extra}, VLLMSettings)
    return VLLMAdapter(MODEL, AdapterOptions(generation=GenerationConfig(seed=0)), settings, engine_factory=factory)


def standin_run(folder: Path, factory: StandinFactory, chunk: int = 256, **options: Any) -> RunResult:
    """``u2eval run`` of the bundled sample into ``folder`` through the vllm adapter and this engine."""
    return run(RunOptions(model=f"vllm/{MODEL}", out=folder, **options), adapter=standin_adapter(factory, chunk))
