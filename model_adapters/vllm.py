"""vLLM in-process: ``vllm/<hf-id-or-local-path>``, or a preset naming ``adapter: vllm``.

One ``vllm.LLM`` engine per run, built on first use (the dispatcher's preflight) from the preset's engine
arguments. Cases go to it as multimodal chat conversations through ``LLM.chat``, a chunk at a time: the
adapter's ``max_batch_size`` is the chunk, so the dispatcher stores each chunk's answers as soon as it is
done and a crash loses at most the chunk in flight. vLLM batches inside a chunk itself (continuous
batching), so large chunks keep the GPU busy; 256 is the default.

Preset ``extra`` (all optional)::

    chunk_size     conversations per LLM.chat call (default 256)
    engine         keyword arguments of vllm.LLM: tensor_parallel_size, pipeline_parallel_size,
                   distributed_executor_backend (``ray`` across nodes), max_model_len, limit_mm_per_prompt
                   (default {image: 1}), mm_processor_kwargs (e.g. max_pixels), gpu_memory_utilization, dtype,
                   trust_remote_code, seed, revision, hf_overrides, tokenizer_mode, ...
    chat_template  a Jinja file (absolute, or relative to the working directory or the presets folder) used
                   instead of the template the model ships
    lora           {name, subfolder}: a LoRA inside the model repository sent with every conversation (the
                   vision tower of Phi-4-multimodal); needs ``enable_lora`` in ``engine``
    image_budget   u2eval.models.images.ImageBudget; none: every image goes in its original bytes and encoding

The model identity (``ModelInfo.revision``) holds the revision (the preset's ``engine.revision``, the local
path, or ``unpinned``) and a hash of every engine argument that can change an answer (dtype, revision,
mm_processor_kwargs, hf_overrides, tokenizer settings, the chat template's text, the LoRA, the image budget),
so stored answers are never reused across them. Arguments that only change speed or memory (parallelism,
memory fraction, max_model_len, chunk size) stay out of it: a run resumed on more GPUs reuses its answers.

``vllm`` is imported only in ``vllm_engine`` (it pulls in torch and CUDA). Tests pass their own engine
factory: an object with ``LLM.chat``'s signature and vLLM's output types (tests/vllm_standin.py).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.util
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from model_adapters._base import Identified
from model_adapters._local import EngineThread, LoadOnce, input_failure, parse_settings, probe_prompt, read_template
from model_adapters._wire import one_line
from u2eval.errors import AdapterError, ConfigError
from u2eval.models.images import ImageBudget, fit
from u2eval.models.protocol import AdapterOptions, ModelRequest
from u2eval.records import Completion, GenerationConfig, ImageSent, ModelInfo, Prompt, TextPart, Usage

T = TypeVar("T")
P = TypeVar("P")

DEFAULT_CHUNK = 256
# u2eval sends one image per case; vLLM sizes its memory profile by this limit, so it is set unless given.
DEFAULT_ENGINE: Mapping[str, Any] = {"limit_mm_per_prompt": {"image": 1}}
# Engine arguments that change speed or memory, never the answer: kept out of the model identity.
SPEED_ONLY = frozenset(
    {
        "tensor_parallel_size",
        "pipeline_parallel_size",
        "data_parallel_size",
        "distributed_executor_backend",
        "gpu_memory_utilization",
        "max_model_len",
        "max_num_seqs",
        "max_num_batched_tokens",
        "limit_mm_per_prompt",
        "enforce_eager",
        "swap_space",
        "cpu_offload_gb",
        "download_dir",
        "trust_remote_code",
        "enable_prefix_caching",
        "enable_chunked_prefill",
        "disable_log_stats",
        "disable_custom_all_reduce",
        "compilation_config",
        "max_lora_rank",
        "enable_lora",
    }
)


class LoraSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "vision"
    subfolder: str


class VLLMSettings(BaseModel):
    """The preset's ``extra`` for this adapter; an unknown key is an error, not silently ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    chunk_size: int = Field(default=DEFAULT_CHUNK, ge=1)
    engine: dict[str, Any] = {}
    chat_template: str | None = None
    lora: LoraSettings | None = None
    image_budget: ImageBudget | None = None


# -- pure converters ---------------------------------------------------------------------------------------


def data_url(data: bytes, media_type: str) -> str:
    """The image, byte for byte, as a ``data:`` URL of its own media type."""
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def to_conversation(prompt: Prompt, budget: ImageBudget | None = None) -> tuple[list[dict[str, Any]], ImageSent | None]:
    """The chat conversation vLLM receives for one prompt (OpenAI message format, parts in the prompt's order;
    images as data URLs, lossless unless ``budget`` makes them shrink), and the (first) image as sent.

    Raises ValueError when an image is unreadable or cannot be made to fit the budget.
    """
    content: list[dict[str, Any]] = []
    sent: ImageSent | None = None
    for part in prompt.parts:
        if isinstance(part, TextPart):
            content.append({"type": "text", "text": part.text})
            continue
        data, media_type, image_sent = fit(part.data, part.media_type, budget)
        sent = sent or image_sent
        content.append({"type": "image_url", "image_url": {"url": data_url(data, media_type)}})
    messages: list[dict[str, Any]] = [{"role": "system", "content": prompt.system}] if prompt.system else []
    messages.append({"role": "user", "content": content})
    return messages, sent


def sampling_kwargs(config: GenerationConfig) -> dict[str, Any]:
    """``vllm.SamplingParams`` arguments for the run's generation settings (one answer per conversation)."""
    return {
        "temperature": config.temperature,
        "top_p": config.top_p,
        "max_tokens": config.max_tokens,
        "seed": config.seed,
    }


def from_output(
    output: Any, request: ModelRequest, *, image_sent: ImageSent | None = None, latency_s: float = 0.0
) -> Completion:
    """A ``vllm.RequestOutput`` -> Completion: text (an answer cut by ``max_tokens`` is kept, with
    ``finish_reason`` 'length'), or ``empty``; token usage; the image as sent.

    ``latency_s``: the chunk's wall time shared out over its conversations (vLLM answers them together).
    """
    common: dict[str, Any] = {
        "case_id": request.case.case_id,
        "key": request.key,
        "image_sent": image_sent,
        "latency_s": latency_s,
    }
    choices = list(getattr(output, "outputs", None) or [])
    if not choices:
        return Completion(**common, error="empty", error_message="vLLM returned no output for this conversation")
    choice = choices[0]
    prompt_ids = getattr(output, "prompt_token_ids", None)
    token_ids = getattr(choice, "token_ids", None)
    common["usage"] = Usage(
        input_tokens=len(prompt_ids) if prompt_ids is not None else None,
        output_tokens=len(token_ids) if token_ids is not None else None,
    )
    finish = getattr(choice, "finish_reason", None)
    common["finish_reason"] = finish if isinstance(finish, str) else None
    if finish == "abort":  # the engine dropped the request (shutdown, preemption): not the model's answer
        return Completion(**common, error="server", error_message="vLLM aborted the request")
    text = getattr(choice, "text", None)
    if not isinstance(text, str) or not text.strip():
        return Completion(
            **common,
            text=text if isinstance(text, str) else None,
            error="empty",
            error_message="the model returned no text",
        )
    return Completion(**common, text=text)


@dataclass(frozen=True)
class Prepared:
    """A request with its conversation, or the reason it cannot be sent."""

    request: ModelRequest
    conversation: list[dict[str, Any]] | None
    sent: ImageSent | None
    error: ValueError | None = None


def prepare(requests: Sequence[ModelRequest], budget: ImageBudget | None) -> list[Prepared]:
    prepared = []
    for request in requests:
        try:
            conversation, sent = to_conversation(request.prompt, budget)
        except ValueError as exc:
            prepared.append(Prepared(request, None, None, exc))
            continue
        prepared.append(Prepared(request, conversation, sent))
    return prepared


def model_identity(
    model: str,
    engine: Mapping[str, Any],
    template: str | None,
    lora: LoraSettings | None = None,
    budget: ImageBudget | None = None,
) -> str:
    """``ModelInfo.revision`` for an engine: where the weights come from, and a hash of what changes answers."""
    revision = engine.get("revision")
    local = Path(model).expanduser()
    if revision:
        where = f"rev={revision}"
    elif local.is_dir():
        where = f"local={local.resolve()}"
    else:
        where = "unpinned"
    answers: dict[str, Any] = {k: v for k, v in engine.items() if k not in SPEED_ONLY}
    answers["chat_template_sha256"] = hashlib.sha256(template.encode()).hexdigest() if template is not None else None
    answers["lora"] = lora.model_dump() if lora is not None else None
    answers["image_budget"] = budget.signature() if budget is not None else None
    digest = hashlib.sha256(json.dumps(answers, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{where};engine-{digest}"


# -- the engine ----------------------------------------------------------------------------------------------


class ChatLLM(Protocol):
    """What the adapter uses of ``vllm.LLM``."""

    def chat(
        self,
        messages: list[list[dict[str, Any]]],
        sampling_params: Any = None,
        *,
        use_tqdm: bool = True,
        lora_request: Any = None,
        chat_template: str | None = None,
    ) -> Sequence[Any]: ...


@dataclass(frozen=True)
class Engine:
    llm: ChatLLM
    sampling_params: Callable[..., Any]  # vllm.SamplingParams
    lora_request: Any = None  # a vllm LoRARequest sent with every conversation, or None


EngineFactory = Callable[[str, dict[str, Any], LoraSettings | None], Engine]


def lora_path(model: str, lora: LoraSettings, revision: str | None) -> str:
    """The local folder of a LoRA shipped inside the model repository (downloaded with the model's files)."""
    local = Path(model).expanduser()
    if local.is_dir():
        return str(local / lora.subfolder)
    from huggingface_hub import snapshot_download

    root = snapshot_download(model, revision=revision, allow_patterns=[f"{lora.subfolder}/*"])
    return str(Path(root) / lora.subfolder)


def vllm_engine(model: str, engine_args: dict[str, Any], lora: LoraSettings | None) -> Engine:
    """The real engine: the only place ``vllm`` is imported (it pulls in torch and CUDA)."""
    import vllm

    lora_request = None
    if lora is not None:
        from vllm.lora.request import LoRARequest

        lora_request = LoRARequest(lora.name, 1, lora_path(model, lora, engine_args.get("revision")))
    return Engine(vllm.LLM(model=model, **engine_args), vllm.SamplingParams, lora_request)


# -- the adapter ---------------------------------------------------------------------------------------------


class VLLMAdapter(Identified):
    """Chunks of conversations through one in-process ``vllm.LLM``."""

    def __init__(
        self, model: str, options: AdapterOptions, settings: VLLMSettings, engine_factory: EngineFactory = vllm_engine
    ) -> None:
        if not model:
            raise ConfigError(
                "vllm needs a model: vllm/<hf-id> or vllm/<local path>, e.g. vllm/Qwen/Qwen2.5-VL-7B-Instruct"
            )
        self._model = model
        self._settings = settings
        self._generation = options.generation
        self._text_only = options.text_only
        self._template = read_template(settings.chat_template)
        self._factory = engine_factory
        self._engine = LoadOnce(
            lambda: engine_factory(model, dict(DEFAULT_ENGINE) | settings.engine, settings.lora),
            f"vllm/{model}: the engine did not start",
        )
        self._thread = EngineThread("u2eval-vllm")
        revision = model_identity(model, settings.engine, self._template, settings.lora, settings.image_budget)
        super().__init__(ModelInfo(adapter="vllm", model=model, revision=revision), settings.chunk_size)

    # Everything below that touches the engine runs on the engine thread.

    def _chat(self, conversations: list[list[dict[str, Any]]], config: GenerationConfig) -> list[Any]:
        engine = self._engine.get()
        outputs = engine.llm.chat(
            conversations,
            engine.sampling_params(**sampling_kwargs(config)),
            use_tqdm=False,
            lora_request=engine.lora_request,
            chat_template=self._template,
        )
        if len(outputs) != len(conversations):  # LLM.chat returns one output per conversation, in order
            raise AdapterError(
                f"vLLM returned {len(outputs)} outputs for {len(conversations)} conversations",
                kind="malformed",
                retryable=True,
            )
        return list(outputs)

    def _chat_isolating(self, conversations: list[list[dict[str, Any]]]) -> list[Any]:
        """Outputs in order; a conversation vLLM refuses comes back as its ValueError.

        vLLM validates every input before generating anything (a prompt longer than max_model_len, an image it
        cannot read) and one refusal fails the whole call: the chunk is halved until the refused ones stand alone.
        """
        if not conversations:
            return []
        try:
            return self._chat(conversations, self._generation)
        except ValueError as exc:
            if len(conversations) == 1:
                return [exc]
            middle = len(conversations) // 2
            return self._chat_isolating(conversations[:middle]) + self._chat_isolating(conversations[middle:])

    def _answer(self, chunk: Sequence[Prepared]) -> list[Completion]:
        started = time.perf_counter()
        completions = [input_failure(p.request, p.error) for p in chunk if p.error is not None]
        sending = [p for p in chunk if p.conversation is not None]
        try:
            outputs = self._chat_isolating([p.conversation for p in sending if p.conversation is not None])
        except (ConfigError, AdapterError):
            raise
        except Exception as exc:  # CUDA errors, a dead engine: the chunk's cases are infra errors, asked again next run
            message = one_line(str(exc) or type(exc).__name__, 400)
            raise AdapterError(f"vLLM failed: {message}", kind="server", retryable=False) from exc
        share = round((time.perf_counter() - started) / max(1, len(sending)), 4)
        for prepared, output in zip(sending, outputs, strict=True):
            if isinstance(output, ValueError):
                completions.append(input_failure(prepared.request, output))
            else:
                completions.append(from_output(output, prepared.request, image_sent=prepared.sent, latency_s=share))
        return completions

    async def generate(self, requests: Sequence[ModelRequest]) -> list[Completion]:
        job = tuple(r.key for r in requests)
        chunk = functools.partial(prepare, requests, self._settings.image_budget)
        return await self._thread.run(job, chunk, self._answer)

    async def preflight(self) -> None:
        """Build the engine (minutes for a large model), then one one-image conversation with one output token:
        a model without vision, a chat template that does not render or a bad engine argument fails here."""
        probe = probe_prompt(self._text_only)
        conversation, _ = to_conversation(probe)
        config = self._generation.model_copy(update={"max_tokens": 1})

        def check() -> None:
            try:
                self._chat([conversation], config)
            except (ConfigError, AdapterError):
                raise
            except Exception as exc:
                raise ConfigError(
                    f"vllm/{self._model}: a one-image test conversation failed ({one_line(str(exc), 300)}); "
                    "check the chat template and limit_mm_per_prompt"
                ) from exc

        await self._thread.run(("preflight",), lambda: None, lambda _: check())

    async def aclose(self) -> None:
        self._thread.close()
        self._engine.drop()


def create(model: str, options: AdapterOptions) -> VLLMAdapter:
    if importlib.util.find_spec("vllm") is None:  # importing it here would cost seconds of torch start-up
        raise ImportError("vllm is not installed", name="vllm")
    return VLLMAdapter(model, options, parse_settings("vllm", options.extra, VLLMSettings))
