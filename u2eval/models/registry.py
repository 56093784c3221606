"""The explicit adapter name -> module table, presets and ``provider/model`` resolution, ``-M`` arguments.

An adapter is one module in ``model_adapters/`` exposing ``create(model: str, options: AdapterOptions)``
that returns an object implementing :class:`~u2eval.models.protocol.ModelAdapter`. Adapters are imported
lazily, by name, only when chosen, so a missing SDK only matters for the adapter that needs it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from u2eval.errors import ConfigError, did_you_mean
from u2eval.grounded.boxes import get_convention
from u2eval.models.pricing import Price
from u2eval.models.protocol import AdapterOptions, ModelAdapter
from u2eval.records import GenerationConfig

# name -> (module, pip extra that provides its SDK, or None when it needs nothing extra).
ADAPTERS: Mapping[str, tuple[str, str | None]] = {
    "random": ("model_adapters.random", None),
    "replay": ("model_adapters.replay", None),
    "anthropic": ("model_adapters.anthropic", "api"),
    "google": ("model_adapters.google", "api"),
    "openai": ("model_adapters.openai", "api"),
    "vllm": ("model_adapters.vllm", "vllm"),
    "ray-vllm": ("model_adapters.ray_vllm", "ray"),
    "hf": ("model_adapters.hf", "hf"),
    "grounded-standin": ("model_adapters.grounded_standin", None),
}


def _presets_dir() -> Path:
    spec = importlib.util.find_spec("model_adapters")  # located, not imported: adapters are loaded by name
    if spec is None or spec.origin is None:
        raise ConfigError("the model_adapters package is missing: reinstall u2eval")
    return Path(spec.origin).resolve().parent / "presets"


PRESETS_DIR = _presets_dir()


class Preset(BaseModel):
    """One evaluated model: which adapter, the exact model id, generation settings and adapter extras."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    adapter: str
    model: str
    description: str = ""
    generation: GenerationConfig = GenerationConfig()
    concurrency: int = 8
    base_url: str | None = None
    extra: dict[str, Any] = {}
    # How the model writes boxes in its answers (u2eval.grounded.boxes), for grounded scoring; never guessed.
    box_convention: str | None = None
    # When the provider retires the model (ISO date, or year-month as announced): a judge's readings can only be
    # redone until then, so `u2eval judge` records it and warns as the day nears.
    retires: str | None = None
    # List prices (USD per million tokens, with when they were read) and the image-token rule, for --dry-run's
    # estimates and the cost of what a run used (u2eval.models.pricing, u2eval.models.image_tokens).
    price: Price | None = None
    image_tokens: str | None = None


@dataclass(frozen=True)
class ResolvedModel:
    adapter: str
    model: str
    preset: Preset | None


def list_presets() -> list[Preset]:
    presets = []
    for path in sorted(PRESETS_DIR.glob("*.yaml")):
        presets.append(load_preset(path))
    return presets


def load_preset(path: Path) -> Preset:
    try:
        preset = Preset.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
        if preset.box_convention is not None:
            get_convention(preset.box_convention)
    except (OSError, yaml.YAMLError, ValidationError, ConfigError) as exc:
        raise ConfigError(f"invalid preset {path}: {exc}") from exc
    return preset


def _preset_path(spec: str) -> Path | None:
    """A shipped preset by name (any case), or a preset file anywhere (``path/to/preset.yaml``)."""
    if spec.endswith((".yaml", ".yml")) and Path(spec).is_file():
        return Path(spec)
    by_name = {p.stem.lower(): p for p in PRESETS_DIR.glob("*.yaml")}
    return by_name.get(spec.lower())


def resolve_model(spec: str) -> ResolvedModel:
    """``random``, ``replay/PATH``, ``openai/gpt-4o``, a preset name (any case) or a preset file -> adapter
    name and model id."""
    preset_path = _preset_path(spec)
    if preset_path is not None:
        preset = load_preset(preset_path)
        _check_adapter(preset.adapter)
        return ResolvedModel(preset.adapter, preset.model, preset)
    adapter, _, model = spec.partition("/")
    _check_adapter(adapter, spec)
    return ResolvedModel(adapter, model, None)


def _check_adapter(name: str, spec: str | None = None) -> None:
    if name not in ADAPTERS:
        presets = [p.stem for p in PRESETS_DIR.glob("*.yaml")]
        hint = did_you_mean(name, ADAPTERS) or did_you_mean(spec or name, presets)
        raise ConfigError(
            f"unknown model or adapter {name!r}{hint}; adapters: {', '.join(sorted(ADAPTERS))} "
            "(see `u2eval models` for presets)"
        )


def parse_model_args(pairs: Sequence[str]) -> dict[str, Any]:
    """``-M key=value`` pairs as adapter arguments: a value that reads as JSON is that (numbers, true, lists,
    objects), any other is text; a dotted key nests ('extra_body.reasoning_effort=high')."""
    args: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"-M takes key=value, not {pair!r}")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        *path, last = [part.strip() for part in key.split(".")]
        node = args
        for part in path:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"-M {key}: {part} is set to a value and used as a group")
        node[last] = value
    return args


def merge_args(base: Mapping[str, Any], args: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` over ``base``, nested groups merged key by key (a preset's extra_body keeps its other keys)."""
    merged = dict(base)
    for key, value in args.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_args(merged[key], value)
        else:
            merged[key] = value
    return merged


def create_adapter(resolved: ResolvedModel, options: AdapterOptions) -> ModelAdapter:
    """Import the adapter's module only now, and turn a missing SDK into one actionable line.

    ``create`` may raise ImportError too: an adapter whose engine is too heavy to import up front (vllm,
    ray) only checks that it is installed there."""
    module_name, extra = ADAPTERS[resolved.adapter]
    try:
        module = importlib.import_module(module_name)
        adapter: ModelAdapter = module.create(resolved.model, options)
    except ImportError as exc:
        hint = f"pip install 'u2eval[{extra}]'" if extra else "reinstall u2eval"
        raise ConfigError(f"adapter {resolved.adapter!r} cannot be loaded ({exc.name} missing): {hint}") from exc
    return adapter
