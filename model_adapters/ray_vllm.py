"""vLLM replicas on a Ray cluster through Ray Data's LLM batch processor: ``ray-vllm/<hf-id>``, extra
``u2eval[ray]``.

The same conversations as the in-process adapter (``model_adapters.vllm.to_conversation``) go through
``ray.data.llm``'s vLLM engine processor with image support, ``replicas`` engine replicas at once (one per
GPU, or per ``tensor_parallel_size`` GPUs). Each chunk of cases the dispatcher hands over is one Ray Data job;
its answers come back as rows joined to their cases by key and go into the run's store when the job ends, so
resume and scoring are the same as for every other adapter. The replicas start (load the model) once per job:
chunks are large (``chunk_size``, default 2048) and one job runs at a time (preset ``concurrency: 1``).

Preset ``extra`` (all optional)::

    chunk_size        cases per Ray Data job (default 2048)
    replicas          vLLM engine replicas (Ray Data's actor pool; default 1)
    batch_size        conversations per batch handed to a replica (default 64)
    engine            vllm engine arguments, as for the vllm adapter (tensor_parallel_size per replica, ...)
    chat_template     a Jinja file used instead of the model's own template
    image_budget      u2eval.models.images.ImageBudget; none: images go in their original bytes and encoding
    address           the Ray cluster (default: RAY_ADDRESS, else a local Ray started here)
    accelerator_type  the GPU type the replicas need (e.g. H100)
    processor         more ``vLLMEngineProcessorConfig`` fields, passed as they are

Pure converters (``to_row``, ``preprocess``, ``postprocess``, ``from_row``) are apart from the Ray plumbing, and
the vLLM stage is injectable: ``stage_factory(model, settings, chat_template) -> (Dataset -> Dataset)`` is
``vllm_stage`` here, and a CPU stand-in in the tests, which run this whole path on a local Ray.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from model_adapters._base import Identified
from model_adapters._local import EngineThread, LoadOnce, input_failure, parse_settings, read_template
from model_adapters._wire import one_line
from model_adapters.vllm import DEFAULT_ENGINE, model_identity, sampling_kwargs, to_conversation
from u2eval.errors import AdapterError, ConfigError
from u2eval.models.images import ImageBudget
from u2eval.models.protocol import AdapterOptions, ModelRequest
from u2eval.records import Completion, GenerationConfig, ImageSent, ModelInfo, Usage

# Engine arguments that vLLM's multimodal input parser (Ray Data's CPU stage) needs to read the model's config.
_MODEL_CONFIG_KEYS = ("trust_remote_code", "revision", "tokenizer", "tokenizer_mode", "hf_overrides")
DEFAULT_GENERATION = GenerationConfig()


class RayVLLMSettings(BaseModel):
    """The preset's ``extra`` for this adapter; an unknown key is an error, not silently ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    chunk_size: int = Field(default=2048, ge=1)
    replicas: int = Field(default=1, ge=1)
    batch_size: int = Field(default=64, ge=1)
    engine: dict[str, Any] = {}
    chat_template: str | None = None
    image_budget: ImageBudget | None = None
    address: str | None = None
    accelerator_type: str | None = None
    processor: dict[str, Any] = {}


Stage = Callable[[Any], Any]  # ray.data.Dataset of to_row rows -> Dataset of postprocess rows
StageFactory = Callable[[str, RayVLLMSettings, "str | None"], Stage]


# -- pure converters ---------------------------------------------------------------------------------------


def to_row(
    request: ModelRequest, generation: GenerationConfig = DEFAULT_GENERATION, budget: ImageBudget | None = None
) -> dict[str, Any]:
    """One Ray Data row: the case's conversation (exactly the in-process adapter's) as compact JSON, one string
    column whatever its parts; the sampling parameters; and what the answer is joined back by.

    Raises ValueError when the image is unreadable or cannot be made to fit ``budget``.
    """
    conversation, sent = to_conversation(request.prompt, budget)
    return {
        "key": request.key,
        "case_id": request.case.case_id,
        "conversation": json.dumps(conversation, separators=(",", ":")),
        "sampling_params": {k: v for k, v in sampling_kwargs(generation).items() if v is not None},
        "max_tokens": generation.max_tokens,
        "image_sent": sent.model_dump_json() if sent is not None else "",
    }


def preprocess(row: dict[str, Any]) -> dict[str, Any]:
    """What Ray Data's vLLM processor reads (its ``preprocess``; merged into the row): the messages."""
    return {"messages": json.loads(row["conversation"]), "sampling_params": row["sampling_params"]}


def postprocess(row: dict[str, Any]) -> dict[str, Any]:
    """The columns ``from_row`` needs (the processor's ``postprocess``): the join key and the answer."""
    keep = ("key", "case_id", "image_sent", "max_tokens", "generated_text", "num_input_tokens", "num_generated_tokens")
    out = {name: row.get(name) for name in keep}
    if row.get("finish_reason") is not None:
        out["finish_reason"] = row["finish_reason"]
    return out


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def from_row(row: Mapping[str, Any], latency_s: float = 0.0) -> Completion:
    """An output row -> Completion. A row the engine failed (``__inference_error__``) is an infra error:
    ``bad_request`` when vLLM refused the input (a ValueError), else ``server``.

    Ray's vLLM stage reports no finish reason: an answer that used all of ``max_tokens`` is taken as cut
    ('length'), any other as 'stop'.
    """
    sent = str(row.get("image_sent") or "")
    common: dict[str, Any] = {
        "case_id": str(row["case_id"]),
        "key": str(row["key"]),
        "image_sent": ImageSent.model_validate_json(sent) if sent else None,
        "latency_s": latency_s,
    }
    failure = str(row.get("__inference_error__") or "")
    if failure:
        kind = "bad_request" if failure.startswith("ValueError") else "server"
        return Completion(**common, error=kind, error_message=one_line(failure, 500))
    produced, budget = _int(row.get("num_generated_tokens")), _int(row.get("max_tokens"))
    finish = row.get("finish_reason")
    if not isinstance(finish, str):
        finish = "length" if produced is not None and budget is not None and produced >= budget else "stop"
    common["finish_reason"] = finish
    common["usage"] = Usage(input_tokens=_int(row.get("num_input_tokens")), output_tokens=produced)
    text = row.get("generated_text")
    if not isinstance(text, str) or not text.strip():
        return Completion(**common, error="empty", error_message="the model returned no text")
    return Completion(**common, text=text)


# -- the Ray Data plumbing -----------------------------------------------------------------------------------


def processor_config(model: str, settings: RayVLLMSettings, chat_template: str | None) -> Any:
    """``ray.data.llm.vLLMEngineProcessorConfig`` with image support, for the installed Ray."""
    from ray.data.llm import vLLMEngineProcessorConfig

    fields = vLLMEngineProcessorConfig.model_fields
    engine = dict(DEFAULT_ENGINE) | settings.engine
    kwargs: dict[str, Any] = {
        "model_source": model,
        "engine_kwargs": engine,
        "concurrency": settings.replicas,
        "batch_size": settings.batch_size,
    }
    if settings.accelerator_type is not None:
        kwargs["accelerator_type"] = settings.accelerator_type
    if "prepare_multimodal_stage" in fields:  # Ray >= 2.5x: vLLM's own chat parser reads the images
        model_config = {k: engine[k] for k in _MODEL_CONFIG_KEYS if k in engine}
        kwargs["prepare_multimodal_stage"] = {"enabled": True, "model_config_kwargs": model_config}
        kwargs["chat_template_stage"] = {"enabled": True, "chat_template": chat_template}
    else:  # Ray 2.44 to 2.4x (not checked here: this machine has a newer Ray)
        kwargs |= {"has_image": True, "apply_chat_template": True, "chat_template": chat_template}
    if "should_continue_on_error" in fields:  # one refused row is that case's error, not the job's
        kwargs["should_continue_on_error"] = True
    return vLLMEngineProcessorConfig(**(kwargs | settings.processor))


def vllm_stage(model: str, settings: RayVLLMSettings, chat_template: str | None) -> Stage:
    """Ray Data's vLLM engine processor: a callable Dataset -> Dataset."""
    try:
        import ray.data.llm as llm

        build = getattr(llm, "build_processor", None) or getattr(llm, "build_llm_processor", None)  # renamed in 2.5x
        if build is None:
            raise ConfigError("ray-vllm: this Ray has no ray.data.llm processor builder: pip install 'u2eval[ray]'")
        processor: Stage = build(
            processor_config(model, settings, chat_template), preprocess=preprocess, postprocess=postprocess
        )
    except ImportError as exc:  # ray[data] alone: the processor also needs ray[llm] (transformers, vllm, ...)
        raise ConfigError(
            f"ray-vllm: Ray Data's vLLM processor cannot be loaded ({exc.name} missing): pip install 'u2eval[ray]'"
        ) from exc
    return processor


class RayVLLMAdapter(Identified):
    """Chunks of cases as Ray Data jobs over ``replicas`` vLLM engines."""

    def __init__(
        self,
        model: str,
        options: AdapterOptions,
        settings: RayVLLMSettings,
        stage_factory: StageFactory = vllm_stage,
    ) -> None:
        if not model:
            raise ConfigError("ray-vllm needs a model: ray-vllm/<hf-id>, e.g. ray-vllm/Qwen/Qwen2.5-VL-7B-Instruct")
        self._model = model
        self._settings = settings
        self._generation = options.generation
        self._template = read_template(settings.chat_template)
        self._stage = LoadOnce(lambda: self._connected(stage_factory), f"ray-vllm/{model}")
        self._thread = EngineThread("u2eval-ray")
        revision = model_identity(model, settings.engine, self._template, None, settings.image_budget)
        super().__init__(ModelInfo(adapter="ray-vllm", model=model, revision=revision), settings.chunk_size)

    def _connected(self, stage_factory: StageFactory) -> Stage:
        """The processor stage, once Ray is up (connecting to the cluster the preset names, or a local one)."""
        import ray

        if not ray.is_initialized():
            ray.init(address=self._settings.address)
        return stage_factory(self._model, self._settings, self._template)

    def _rows(self, requests: Sequence[ModelRequest]) -> tuple[list[dict[str, Any]], list[Completion]]:
        rows, failed = [], []
        for request in requests:
            try:
                rows.append(to_row(request, self._generation, self._settings.image_budget))
            except ValueError as exc:
                failed.append(input_failure(request, exc))
        return rows, failed

    def _job(self, prepared: tuple[list[dict[str, Any]], list[Completion]]) -> list[Completion]:
        import ray.data

        rows, completions = prepared
        if not rows:
            return completions
        started = time.perf_counter()
        try:
            stage = self._stage.get()
            outputs = list(stage(ray.data.from_items(rows)).iter_rows())
        except (ConfigError, AdapterError):
            raise
        except Exception as exc:  # a failed job (engine, actor, cluster): its cases are asked again next run
            message = one_line(str(exc) or type(exc).__name__, 400)
            raise AdapterError(f"Ray Data job failed: {message}", kind="server", retryable=False) from exc
        share = round((time.perf_counter() - started) / len(rows), 4)
        return completions + [from_row(row, share) for row in outputs]

    async def generate(self, requests: Sequence[ModelRequest]) -> list[Completion]:
        job = tuple(r.key for r in requests)
        return await self._thread.run(job, functools.partial(self._rows, requests), self._job)

    async def preflight(self) -> None:
        """Connect to Ray and build the processor: a missing ``ray[llm]`` or a bad processor setting fails here,
        before any case (the engines themselves start with the first job)."""

        await self._thread.run(("preflight",), lambda: None, lambda _: self._stage.get())

    async def aclose(self) -> None:
        self._thread.close()


def create(model: str, options: AdapterOptions) -> RayVLLMAdapter:
    if importlib.util.find_spec("ray") is None:  # importing ray costs a second: only check it is there
        raise ImportError("ray is not installed", name="ray")
    settings: RayVLLMSettings = parse_settings("ray-vllm", options.extra, RayVLLMSettings)
    return RayVLLMAdapter(model, options, settings)
