"""The pure side of the HF transformers adapter (``model_adapters.hf``): its preset settings, the model
identity, and the conversions between u2eval's records and what a model takes and gives (chat messages,
generation settings, generated ids, predict_forward's text and masks). No torch here: all of it is tested
without a model."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from model_adapters._wire import one_line
from u2eval.grounded.regions import mask_from_array
from u2eval.models.images import ImageBudget, fit
from u2eval.models.protocol import ModelRequest
from u2eval.records import (
    Completion,
    GenerationConfig,
    ImagePart,
    ImageSent,
    Mask,
    Prompt,
    Regions,
    TextPart,
    Usage,
)

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
