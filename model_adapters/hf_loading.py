"""The torch side of the HF transformers adapter (``model_adapters.hf``): loading the model and its
processor, the device and dtype, moving inputs there, and telling out-of-memory and fatal CUDA errors from a
case's own failure. torch and transformers are imported only here, and only when a model loads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from model_adapters._local import input_failure
from model_adapters._wire import one_line
from model_adapters.hf_convert import HFSettings
from u2eval.errors import ConfigError
from u2eval.models.protocol import ModelRequest
from u2eval.records import (
    Completion,
    GenerationConfig,
)


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


def to_device(value: Any, loaded: Loaded) -> Any:
    """A processor output on the model's device; floating tensors (pixels) in the model's dtype."""
    if not hasattr(value, "to"):
        return value
    if getattr(value, "is_floating_point", lambda: False)():
        return value.to(loaded.device, dtype=loaded.dtype)
    return value.to(loaded.device)
