"""In-process Hugging Face transformers: ``hf/<hf-id-or-local-path>``, or a preset naming ``adapter: hf``.

For models vLLM cannot serve. One model per run, loaded on first use (the dispatcher's preflight), on the GPU
when there is one, else on the CPU. The preset's ``mode`` says how a case is asked:

- ``generate`` (default): ``AutoModelForImageTextToText`` with ``AutoProcessor``. A case is a chat
  conversation rendered by the processor's chat template; ``batch_size`` of them, padded on the left (the
  models are decoder-only: every row must end where generation starts), go into one ``model.generate``.
- ``predict_forward``: a custom-code model (``trust_remote_code``) called the way Sa2VA and UniBiomed are,
  ``model.predict_forward(image=<PIL RGB>, text="<image>\\n...", tokenizer=<its tokenizer>)`` returning
  ``{"prediction": str, "prediction_masks": [bool array (1, H, W) per [SEG] token]}``. One case per call (the
  method takes one image); the masks become ``Completion.regions`` (source "native"), each labelled with the
  ``<p> phrase </p>`` just before its ``[SEG]`` when the answer has one. docs/hf-models.md has the facts.

Cases reach the adapter a chunk at a time (``chunk_size``, the dispatcher's batch): a chunk's answers are stored
when it ends. A batch that fails is halved until the failing case stands alone, so one bad case never costs its
chunk; a batch that runs out of GPU memory is halved the same way, and a case that does not fit even alone is an
infra error saying so. A CUDA error that leaves the device unusable fails the chunk (asked again next run).

Preset ``extra`` (all optional)::

    mode               generate | predict_forward
    revision           the weights' commit (pinned: recorded in the model identity)
    trust_remote_code  run the model repository's own code (needed by predict_forward models)
    device             cpu, cuda, cuda:1, ... (default: cuda when torch sees one, else cpu)
    dtype              bfloat16 | float16 | float32 (default: bfloat16 on a GPU, float32 on the CPU)
    chunk_size         cases per dispatcher batch (default 64)
    batch_size         conversations per generate call (default 8; predict_forward: always 1)
    model_kwargs       more from_pretrained arguments (attn_implementation, device_map, use_flash_attn, ...)
    processor_kwargs   from_pretrained arguments of the processor / tokenizer (e.g. max_pixels)
    generate_kwargs    more generation settings (e.g. repetition_penalty), on top of the run's
    chat_template      a Jinja file used instead of the processor's own template (generate)
    image_budget       u2eval.images.ImageBudget; none: every image goes in at its own size
    image_placeholder  what marks the image in predict_forward's text (default "<image>")
    seg_token          the token each mask answers to (default "[SEG]")
    strip_tokens       strings removed from a predict_forward answer before it is stored (end-of-turn and
                       grounding markup; the masks and their labels are read before)
    stop_words         what a predict_forward answer that ended by itself ends with (its decoded stop word or
                       end token); one that ends otherwise was cut at max_tokens ('length'). None given: unknown

Generation: the run's temperature, top_p and max_tokens (greedy at temperature 0), seeded per call with the run's
seed. The model's own ``generation_config`` only gives the end and padding tokens: its sampling defaults
(top_k, repetition_penalty, ...) are overridden, as vLLM's are, unless the preset's ``generate_kwargs`` sets them.

The model identity (``ModelInfo.revision``) is where the weights come from (``rev=``, ``local=`` or
``unpinned``) plus a hash of everything that changes answers (mode, dtype, kwargs, chat template, image budget,
text clean-up); chunk and batch sizes and the device are left out: a run resumed elsewhere reuses its answers.

torch and transformers (``u2eval[hf]``) are imported only when the model loads.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from model_adapters._wire import one_line
from model_adapters.vllm import PROBE_PNG, EngineThread, input_failure, parse_settings, read_template
from u2eval.adapters import AdapterOptions, ModelRequest
from u2eval.errors import AdapterError, ConfigError
from u2eval.images import ImageBudget, fit
from u2eval.records import (
    Completion,
    GenerationConfig,
    ImagePart,
    ImageSent,
    Mask,
    ModelInfo,
    Prompt,
    Regions,
    TextPart,
    Usage,
)
from u2eval.regions import mask_from_array

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

# from_pretrained arguments that change where or how fast weights load, never the answer.
SPEED_ONLY = frozenset({"device_map", "low_cpu_mem_usage", "max_memory", "offload_folder", "offload_state_dict"})


class HFSettings(BaseModel):
    """The preset's ``extra`` for this adapter; an unknown key is an error, not silently ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["generate", "predict_forward"] = "generate"
    revision: str | None = None
    trust_remote_code: bool = False
    device: str | None = None
    dtype: Literal["bfloat16", "float16", "float32"] | None = None
    chunk_size: int = Field(default=64, ge=1)
    batch_size: int = Field(default=8, ge=1)
    model_kwargs: dict[str, Any] = {}
    processor_kwargs: dict[str, Any] = {}
    generate_kwargs: dict[str, Any] = {}
    chat_template: str | None = None
    image_budget: ImageBudget | None = None
    image_placeholder: str = "<image>"
    seg_token: str = "[SEG]"
    strip_tokens: tuple[str, ...] = ()
    stop_words: tuple[str, ...] = ()


# -- pure converters ---------------------------------------------------------------------------------------


def to_messages(prompt: Prompt) -> tuple[list[dict[str, Any]], list[ImagePart]]:
    """The chat conversation a processor's template renders (parts in the prompt's order, an image as an
    ``{"type": "image"}`` slot), and the images that fill the slots, in order."""
    content: list[dict[str, Any]] = []
    images: list[ImagePart] = []
    for part in prompt.parts:
        if isinstance(part, TextPart):
            content.append({"type": "text", "text": part.text})
        else:
            content.append({"type": "image"})
            images.append(part)
    messages: list[dict[str, Any]] = []
    if prompt.system:
        messages.append({"role": "system", "content": [{"type": "text", "text": prompt.system}]})
    messages.append({"role": "user", "content": content})
    return messages, images


def predict_text(prompt: Prompt, placeholder: str = "<image>") -> tuple[str, list[ImagePart]]:
    """predict_forward's ``text``: system text, then the parts in order, the image as ``placeholder`` (the model
    swaps it for its image tokens and wraps the whole in its own chat template), one per line."""
    pieces = [prompt.system] if prompt.system else []
    images: list[ImagePart] = []
    for part in prompt.parts:
        if isinstance(part, TextPart):
            pieces.append(part.text)
        else:
            pieces.append(placeholder)
            images.append(part)
    return "\n".join(pieces), images


def decode_image(part: ImagePart, budget: ImageBudget | None = None) -> tuple[Image.Image, ImageSent]:
    """The image as RGB pixels (after the budget's resize, if any) and what was sent. ValueError if unreadable."""
    data, media_type, sent = fit(part.data, part.media_type, budget)
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.convert("RGB"), sent
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:  # pixels past a readable header
        raise ValueError(f"unreadable image ({media_type}, {len(data)} bytes): {exc}") from exc


def generation_kwargs(config: GenerationConfig, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``transformers.GenerationConfig`` arguments for the run's settings: greedy at temperature 0, else
    sampling with its temperature and top_p. Settings transformers would otherwise fill in from the model's
    own generation_config are set to neutral values, so the run's settings are the only ones that apply."""
    sampling = config.temperature > 0
    kwargs: dict[str, Any] = {
        "max_new_tokens": config.max_tokens,
        "do_sample": sampling,
        "num_beams": 1,
        "repetition_penalty": 1.0,
        "no_repeat_ngram_size": 0,
    }
    if sampling:
        kwargs |= {"temperature": config.temperature, "top_p": config.top_p, "top_k": 0}
    return kwargs | dict(extra or {})


def split_generated(tokens: Sequence[int], stop_ids: frozenset[int], max_new: int) -> tuple[list[int], int, str]:
    """One row of a batch's new tokens -> (the answer's tokens, tokens generated, finish reason).

    A row ends at its first stop token (what follows is padding, added while longer rows went on); a row
    with none ran to ``max_new`` ('length'), or was stopped by a stopping criterion of the model's ('stop').
    """
    for index, token in enumerate(tokens):
        if token in stop_ids:
            return list(tokens[:index]), index + 1, "stop"
    return list(tokens), len(tokens), "length" if len(tokens) >= max_new else "stop"


def clean_text(text: str, strip_tokens: Sequence[str]) -> str:
    """``text`` without any of ``strip_tokens``; the spaces they stood between become one, line breaks stay."""
    if not strip_tokens:
        return text.strip()
    for token in strip_tokens:
        text = text.replace(token, " ")
    return "\n".join(" ".join(line.split()) for line in text.split("\n")).strip()


def seg_labels(prediction: str, seg_token: str = "[SEG]") -> list[str | None]:
    """One label per ``seg_token`` in the answer, in order: the ``<p> phrase </p>`` right before it (the
    GLaMM / Sa2VA markup), or None when the token follows no such phrase."""
    labels: list[str | None] = []
    for before in prediction.split(seg_token)[:-1]:
        _, opened, tail = before.rpartition("<p>")
        phrase, closed, rest = tail.partition("</p>")
        label = " ".join(phrase.split()) if opened and closed and not rest.strip() else ""
        labels.append(label or None)
    return labels


def _as_array(value: Any) -> np.ndarray[Any, Any]:
    if hasattr(value, "detach"):  # a torch tensor (bfloat16 has no numpy type: go through float)
        value = value.detach().to("cpu").float().numpy()
    return np.asarray(value)


def masks_of(
    prediction_masks: Sequence[Any], labels: Sequence[str | None], size: tuple[int, int] | None = None
) -> list[Mask]:
    """``prediction_masks`` (one entry per [SEG]: an (H, W) or (frames, H, W) array or tensor) -> Mask records,
    one per frame, labelled by position. ``size`` (width, height): the image sent; a mask of another size is
    a ValueError (the model's code and ours disagree about the image)."""
    masks: list[Mask] = []
    for index, entry in enumerate(prediction_masks):
        array = _as_array(entry)
        frames = [array] if array.ndim == 2 else list(array) if array.ndim == 3 else None
        if frames is None:
            raise ValueError(f"mask {index} has shape {array.shape}: expected (H, W) or (frames, H, W)")
        label = labels[index] if index < len(labels) else None
        for frame in frames:
            if size is not None and (frame.shape[1], frame.shape[0]) != size:
                raise ValueError(f"mask {index} is {frame.shape[1]}x{frame.shape[0]}, the image {size[0]}x{size[1]}")
            masks.append(mask_from_array(frame, label))
    return masks


def completion(
    request: ModelRequest,
    text: str | None,
    *,
    usage: Usage | None = None,
    finish: str | None = None,
    sent: ImageSent | None = None,
    latency_s: float = 0.0,
    regions: Regions | None = None,
) -> Completion:
    """The case's Completion; blank text is ``empty`` (regions, if any, are kept with it)."""
    common: dict[str, Any] = {
        "case_id": request.case.case_id,
        "key": request.key,
        "usage": usage,
        "finish_reason": finish,
        "image_sent": sent,
        "latency_s": latency_s,
        "regions": regions,
    }
    if text is None or not text.strip():
        return Completion(**common, text=text, error="empty", error_message="the model returned no text")
    return Completion(**common, text=text)


def from_prediction(
    raw: Any,
    request: ModelRequest,
    settings: HFSettings,
    *,
    sent: ImageSent | None = None,
    output_tokens: int | None = None,
    latency_s: float = 0.0,
) -> Completion:
    """What predict_forward returned -> Completion: the answer without ``strip_tokens``, the masks as native
    regions (labels from the raw answer), 'stop' or 'length' by ``stop_words``. ``output_tokens``: the raw
    answer re-tokenised (predict_forward does not say how many it generated). Anything not of that shape is
    ``malformed``, never an answer."""
    prediction = raw.get("prediction") if isinstance(raw, Mapping) else None
    if not isinstance(prediction, str):
        return Completion(
            case_id=request.case.case_id,
            key=request.key,
            error="malformed",
            error_message=one_line(f"predict_forward returned {type(raw).__name__} without a 'prediction' text", 300),
        )
    size = (sent.width, sent.height) if sent is not None else None
    try:
        masks = masks_of(raw.get("prediction_masks") or [], seg_labels(prediction, settings.seg_token), size)
    except (ValueError, TypeError) as exc:
        return Completion(
            case_id=request.case.case_id, key=request.key, error="malformed", error_message=one_line(str(exc), 300)
        )
    finish = None
    if settings.stop_words:
        finish = "stop" if prediction.rstrip().endswith(settings.stop_words) else "length"
    return completion(
        request,
        clean_text(prediction, settings.strip_tokens),
        usage=Usage(output_tokens=output_tokens),
        finish=finish,
        sent=sent,
        latency_s=latency_s,
        regions=Regions(masks=masks, source="native") if masks else None,
    )


def model_identity(model: str, settings: HFSettings, dtype: str, template: str | None) -> str:
    """``ModelInfo.revision``: where the weights come from, and a hash of what changes answers."""
    local = Path(model).expanduser()
    if settings.revision:
        where = f"rev={settings.revision}"
    elif local.is_dir():
        where = f"local={local.resolve()}"
    else:
        where = "unpinned"
    answers = settings.model_dump(
        mode="json",
        # stop_words only tell 'stop' from 'length'; the rest below is replaced by what it stands for.
        exclude={"revision", "device", "dtype", "chunk_size", "batch_size", "chat_template", "stop_words"},
    )
    answers["model_kwargs"] = {k: v for k, v in settings.model_kwargs.items() if k not in SPEED_ONLY}
    answers["dtype"] = dtype
    answers["chat_template_sha256"] = hashlib.sha256(template.encode()).hexdigest() if template is not None else None
    answers["image_budget"] = settings.image_budget.signature() if settings.image_budget is not None else None
    digest = hashlib.sha256(json.dumps(answers, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{where};hf-{digest}"


def is_oom(exc: BaseException) -> bool:
    """torch's out-of-memory error (``torch.OutOfMemoryError``, CUDA or otherwise)."""
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def is_fatal(exc: BaseException) -> bool:
    """An error after which the device cannot be trusted (a CUDA fault, a device-side assert)."""
    message = str(exc)
    return not is_oom(exc) and ("CUDA error" in message or "device-side assert" in message)


def case_failure(request: ModelRequest, exc: Exception) -> Completion:
    """A case the model could not answer even alone: an infra error (never scored, asked again next run)."""
    if is_oom(exc):
        message = f"out of GPU memory with this case alone ({one_line(str(exc), 200)}); lower the image budget"
        message += " or max_tokens, or use a larger GPU"
        return Completion(case_id=request.case.case_id, key=request.key, error="server", error_message=message)
    if isinstance(exc, ValueError):
        return input_failure(request, exc)
    text = one_line(f"{type(exc).__name__}: {exc}", 500)
    return Completion(case_id=request.case.case_id, key=request.key, error="bad_request", error_message=text)


# -- the model -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    """One prompt, ready for the model: its conversation or text, its decoded images, the image as sent."""

    messages: list[dict[str, Any]]
    text: str
    images: list[Image.Image]
    sent: ImageSent | None


def make_ready(prompt: Prompt, settings: HFSettings) -> Ready:
    messages, parts = to_messages(prompt)
    text, _ = predict_text(prompt, settings.image_placeholder)
    if settings.mode == "predict_forward" and len(parts) > 1:
        raise ValueError(f"predict_forward takes one image per case; this prompt has {len(parts)}")
    decoded = [decode_image(part, settings.image_budget) for part in parts]
    return Ready(messages, text, [img for img, _ in decoded], decoded[0][1] if decoded else None)


@dataclass(frozen=True)
class Prepared:
    request: ModelRequest
    ready: Ready | None
    error: ValueError | None = None


def prepare(requests: Sequence[ModelRequest], settings: HFSettings) -> list[Prepared]:
    prepared = []
    for request in requests:
        try:
            prepared.append(Prepared(request, make_ready(request.prompt, settings)))
        except ValueError as exc:
            prepared.append(Prepared(request, None, exc))
    return prepared


@dataclass(frozen=True)
class Loaded:
    """A loaded model: ``processor`` is the AutoProcessor (generate) or the tokenizer (predict_forward)."""

    model: Any
    processor: Any
    device: str
    dtype: Any  # torch.dtype
    stop_ids: frozenset[int] = field(default_factory=frozenset)
    pad_id: int | None = None

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)


ModelLoader = Callable[[str, HFSettings, str, str, GenerationConfig], Loaded]


def _ids(value: Any) -> set[int]:
    if value is None:
        return set()
    return {int(v) for v in value} if isinstance(value, list | tuple) else {int(value)}


def load_model(model: str, settings: HFSettings, device: str, dtype: str, generation: GenerationConfig) -> Loaded:
    """The real loader: transformers' Auto classes, the model on its device in eval mode, its end tokens."""
    import torch
    import transformers
    from packaging.version import Version

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"hf/{model}: device {device!r}, but torch {torch.__version__} sees no CUDA GPU")
    torch_dtype = getattr(torch, dtype)
    common: dict[str, Any] = {"revision": settings.revision, "trust_remote_code": settings.trust_remote_code}
    # transformers 4.56 renamed torch_dtype to dtype; older releases (UniBiomed's code pins 4.44) only know the old.
    dtype_arg = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    kwargs = {**common, dtype_arg: torch_dtype, **settings.model_kwargs}
    if settings.mode == "generate":
        net = transformers.AutoModelForImageTextToText.from_pretrained(model, **kwargs)
        processor = transformers.AutoProcessor.from_pretrained(model, **common, **settings.processor_kwargs)
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is None:
            raise ConfigError(f"hf/{model}: its processor {type(processor).__name__} has no tokenizer")
        tokenizer.padding_side = "left"  # decoder-only: every row of a batch must end where generation starts
    else:
        net = transformers.AutoModel.from_pretrained(model, **kwargs)
        processor = tokenizer = transformers.AutoTokenizer.from_pretrained(model, **common, **settings.processor_kwargs)
        if not callable(getattr(net, "predict_forward", None)):
            raise ConfigError(f"hf/{model}: {type(net).__name__} has no predict_forward (mode: predict_forward)")
    if "device_map" not in settings.model_kwargs:
        net.to(device)
    net.eval()
    if settings.mode == "predict_forward" and callable(getattr(net, "preparing_for_generation", None)):
        # Sa2VA's own set-up (greedy, its stop words), made with the run's answer length and dtype.
        net.preparing_for_generation(tokenizer=tokenizer, max_new_tokens=generation.max_tokens, torch_dtype=torch_dtype)
    config = getattr(net, "generation_config", None)
    stop_ids = _ids(getattr(config, "eos_token_id", None)) | _ids(tokenizer.eos_token_id)
    if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return Loaded(net, processor, device, torch_dtype, frozenset(stop_ids), tokenizer.pad_token_id)


def free_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def resolve_device(settings: HFSettings) -> tuple[str, str]:
    """(device, dtype): the preset's, else cuda with bfloat16 when torch sees a GPU, else cpu with float32."""
    device = settings.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = settings.dtype or ("float32" if device == "cpu" else "bfloat16")
    return device, dtype


# -- the adapter ---------------------------------------------------------------------------------------------


class HFAdapter:
    """Chunks of cases through one in-process transformers model."""

    def __init__(
        self,
        model: str,
        options: AdapterOptions,
        settings: HFSettings,
        loader: ModelLoader = load_model,
        device: tuple[str, str] | None = None,
    ) -> None:
        if not model:
            raise ConfigError("hf needs a model: hf/<hf-id> or hf/<local path>, e.g. hf/llava-hf/llava-1.5-7b-hf")
        self._model = model
        self._settings = settings
        self._generation = options.generation
        self._seed = options.generation.seed if options.generation.seed is not None else options.seed
        self._template = read_template(settings.chat_template)
        self._loader = loader
        self._loaded: Loaded | None = None
        self._device, self._dtype = device or resolve_device(settings)
        self._thread = EngineThread("u2eval-hf")
        revision = model_identity(model, settings, self._dtype, self._template)
        self._info = ModelInfo(adapter="hf", model=model, revision=revision)

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def max_batch_size(self) -> int:
        return self._settings.chunk_size

    # Everything below that touches the model runs on the engine thread.

    def _ensure_loaded(self) -> Loaded:
        if self._loaded is None:
            try:
                self._loaded = self._loader(self._model, self._settings, self._device, self._dtype, self._generation)
            except ConfigError:
                raise
            except Exception as exc:  # a missing model, a bad argument, too little memory: all arrive as anything
                raise ConfigError(
                    f"hf/{self._model}: the model did not load on {self._device}: {one_line(str(exc), 400)}"
                ) from exc
        return self._loaded

    def _generate(self, batch: Sequence[Ready], config: GenerationConfig) -> list[tuple[str, Usage, str, float]]:
        """(text, usage, finish reason, latency share) per conversation of one ``model.generate`` call."""
        import torch
        import transformers

        loaded = self._ensure_loaded()
        template = {"chat_template": self._template} if self._template is not None else {}
        texts = [
            loaded.processor.apply_chat_template(r.messages, add_generation_prompt=True, tokenize=False, **template)
            for r in batch
        ]
        images = [img for r in batch for img in r.images]
        inputs = loaded.processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        inputs = {k: _to_device(v, loaded) for k, v in inputs.items()}
        gen_config = transformers.GenerationConfig(
            **generation_kwargs(config, self._settings.generate_kwargs), pad_token_id=loaded.pad_id
        )
        started = time.perf_counter()
        torch.manual_seed(self._seed)
        with torch.inference_mode():
            output = loaded.model.generate(**inputs, generation_config=gen_config)
        share = round((time.perf_counter() - started) / len(batch), 4)
        prompt_length = 0 if getattr(loaded.model.config, "is_encoder_decoder", False) else inputs["input_ids"].shape[1]
        results = []
        for row in range(len(batch)):
            tokens, generated, finish = split_generated(
                output[row, prompt_length:].tolist(), loaded.stop_ids, config.max_tokens
            )
            text = loaded.tokenizer.decode(tokens, skip_special_tokens=True)
            usage = Usage(input_tokens=int(inputs["attention_mask"][row].sum()), output_tokens=generated)
            results.append((text, usage, finish, share))
        return results

    def _predict(self, ready: Ready) -> tuple[Any, int | None, float]:
        """(what predict_forward returned, the answer's length in tokens, seconds) for one case."""
        import torch

        loaded = self._ensure_loaded()
        started = time.perf_counter()
        torch.manual_seed(self._seed)
        with torch.inference_mode():
            raw = loaded.model.predict_forward(
                image=ready.images[0] if ready.images else None, text=ready.text, tokenizer=loaded.tokenizer
            )
        latency = round(time.perf_counter() - started, 4)
        prediction = raw.get("prediction") if isinstance(raw, Mapping) else None
        tokens = None
        if isinstance(prediction, str):
            tokens = len(loaded.tokenizer.encode(prediction, add_special_tokens=False))
        return raw, tokens, latency

    def _isolating(self, items: list[T], call: Callable[[list[T]], Sequence[R]]) -> list[R | Exception]:
        """``call(items)``, halving a batch that fails until each failure stands alone (as its exception)."""
        if not items:
            return []
        try:
            return list(call(items))
        except (ConfigError, AdapterError):
            raise
        except Exception as exc:
            if is_fatal(exc):
                raise
            if is_oom(exc):
                free_memory()
                if len(items) > 1:
                    log.warning("hf: a batch of %d ran out of memory; halving it (lower batch_size)", len(items))
            if len(items) == 1:
                return [exc]
            middle = len(items) // 2
            return self._isolating(items[:middle], call) + self._isolating(items[middle:], call)

    def _answer(self, chunk: Sequence[Prepared]) -> list[Completion]:
        completions = [input_failure(p.request, p.error) for p in chunk if p.error is not None]
        sending = [p for p in chunk if p.ready is not None]
        try:
            if self._settings.mode == "predict_forward":
                completions += [self._answer_predicted(p) for p in sending]
            else:
                completions += self._answer_generated(sending)
        except (ConfigError, AdapterError):
            raise
        except Exception as exc:  # a CUDA fault: the chunk's cases are infra errors, asked again next run
            message = one_line(str(exc) or type(exc).__name__, 400)
            raise AdapterError(f"transformers failed: {message}", kind="server", retryable=False) from exc
        return completions

    def _answer_generated(self, sending: Sequence[Prepared]) -> list[Completion]:
        size = self._settings.batch_size
        outputs: list[tuple[str, Usage, str, float] | Exception] = []
        for start in range(0, len(sending), size):
            batch = [p.ready for p in sending[start : start + size] if p.ready is not None]
            outputs += self._isolating(batch, lambda b: self._generate(b, self._generation))
        completions = []
        for prepared, output in zip(sending, outputs, strict=True):
            if isinstance(output, Exception):
                completions.append(case_failure(prepared.request, output))
                continue
            text, usage, finish, share = output
            sent = prepared.ready.sent if prepared.ready is not None else None
            completions.append(
                completion(prepared.request, text, usage=usage, finish=finish, sent=sent, latency_s=share)
            )
        return completions

    def _answer_predicted(self, prepared: Prepared) -> Completion:
        assert prepared.ready is not None
        (result,) = self._isolating([prepared.ready], lambda b: [self._predict(b[0])])
        if isinstance(result, Exception):
            return case_failure(prepared.request, result)
        raw, tokens, latency = result
        return from_prediction(
            raw,
            prepared.request,
            self._settings,
            sent=prepared.ready.sent,
            output_tokens=tokens,
            latency_s=latency,
        )

    async def generate(self, requests: Sequence[ModelRequest]) -> list[Completion]:
        job = tuple(r.key for r in requests)
        chunk = functools.partial(prepare, requests, self._settings)
        return await self._thread.run(job, chunk, self._answer)

    async def preflight(self) -> None:
        """Load the model (minutes for a large one), then answer one small image: a model without vision, a
        template that does not render or a predict_forward of another shape fails here, before any case."""
        probe = Prompt("preflight", None, (ImagePart(PROBE_PNG, "image/png"), TextPart("Reply OK.")), "", "")

        def check() -> None:
            ready = make_ready(probe, self._settings)
            try:
                if self._settings.mode == "generate":
                    self._generate([ready], self._generation.model_copy(update={"max_tokens": 1}))
                    return
                raw, _, _ = self._predict(ready)
            except (ConfigError, AdapterError):
                raise
            except Exception as exc:
                hint = "; out of memory: lower the image budget or use a larger GPU" if is_oom(exc) else ""
                raise ConfigError(
                    f"hf/{self._model}: a one-image test case failed ({one_line(str(exc), 300)}){hint}"
                ) from exc
            if not (isinstance(raw, Mapping) and isinstance(raw.get("prediction"), str)):
                raise ConfigError(
                    f"hf/{self._model}: predict_forward returned {type(raw).__name__}, not a dict with a "
                    "'prediction' text (and 'prediction_masks')"
                )

        await self._thread.run(("preflight",), lambda: None, lambda _: check())

    async def aclose(self) -> None:
        self._thread.close()
        if self._loaded is not None:
            self._loaded = None
            free_memory()


def _to_device(value: Any, loaded: Loaded) -> Any:
    """A processor output on the model's device; floating tensors (pixels) in the model's dtype."""
    if not hasattr(value, "to"):
        return value
    if getattr(value, "is_floating_point", lambda: False)():
        return value.to(loaded.device, dtype=loaded.dtype)
    return value.to(loaded.device)


def create(model: str, options: AdapterOptions) -> HFAdapter:
    for name in ("torch", "transformers"):
        if importlib.util.find_spec(name) is None:  # importing them here would cost seconds of start-up
            raise ImportError(f"{name} is not installed", name=name)
    return HFAdapter(model, options, parse_settings("hf", options.extra, HFSettings))
