"""How many input tokens an image costs, by each provider's published rule, for the estimates of ``--dry-run``.

A rule is named in a preset (``image_tokens:``), or found from the adapter and model id (:func:`rule_for`). Each
takes the image's size as sent (after the preset's image budget) and returns tokens:

- ``openai-tiles``: GPT-4o and its family at detail "high": fit within 2048 x 2048, then shrink so the short side
  is at most 768, count the 512-pixel tiles; ``base + per_tile x tiles`` (gpt-4o: 85 + 170; gpt-4o-mini is billed
  as 2,833 + 5,667, so the same image costs the same dollars; gpt-5: 70 + 140). Detail "low": ``base`` alone.
- ``anthropic``: shrink to fit a 1568-pixel long edge and 1.15 megapixels, then width x height / 750.
- ``gemini``: 258 for an image at most 384 pixels on both sides, else 258 per 768 x 768 tile.
- ``qwen-vl`` (local models: no price, but tokens for ``--tpm`` and the context): 28 x 28-pixel patches after
  fitting 3,136 to 12,845,056 pixels, one token per patch (Qwen2.5-VL's processor defaults).

Rules read from the providers' documentation (2025); a provider may change them, which is why the estimate is
labelled as one and compared with the usage each answer reports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from u2eval.errors import ConfigError


@dataclass(frozen=True)
class TileRule:
    """OpenAI's tile rule: ``base`` plus ``per_tile`` for each 512-pixel tile at detail 'high'."""

    base: int
    per_tile: int

    def tokens(self, width: int, height: int, detail: str = "high") -> int:
        if detail == "low":
            return self.base
        w, h = float(width), float(height)
        if max(w, h) > 2048:
            scale = 2048 / max(w, h)
            w, h = w * scale, h * scale
        if min(w, h) > 768:
            scale = 768 / min(w, h)
            w, h = w * scale, h * scale
        tiles = math.ceil(int(w) / 512) * math.ceil(int(h) / 512)
        return self.base + self.per_tile * tiles


OPENAI_TILES = {
    "gpt-4o-mini": TileRule(2833, 5667),
    "gpt-4o": TileRule(85, 170),
    "gpt-4.1": TileRule(85, 170),
    "gpt-5": TileRule(70, 140),
}


def anthropic_tokens(width: int, height: int) -> int:
    scale = min(1.0, 1568 / max(width, height), math.sqrt(1_150_000 / (width * height)))
    w, h = int(width * scale), int(height * scale)
    return math.ceil(w * h / 750)


def gemini_tokens(width: int, height: int) -> int:
    if width <= 384 and height <= 384:
        return 258
    return 258 * math.ceil(width / 768) * math.ceil(height / 768)


def qwen_tokens(width: int, height: int, patch: int = 28, min_pixels: int = 3136, max_pixels: int = 12_845_056) -> int:
    h = max(patch, round(height / patch) * patch)
    w = max(patch, round(width / patch) * patch)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = math.floor(height / beta / patch) * patch, math.floor(width / beta / patch) * patch
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / patch) * patch, math.ceil(width * beta / patch) * patch
    return (h // patch) * (w // patch)


RULES = ("openai-tiles", "anthropic", "gemini", "qwen-vl")


def rule_for(adapter: str, model: str, named: str | None = None) -> str:
    """The image-token rule of a model: the preset's, else the provider's own (a served open model: qwen-vl)."""
    if named is not None:
        if named not in RULES:
            raise ConfigError(f"unknown image_tokens rule {named!r}; rules: {', '.join(RULES)}")
        return named
    if adapter == "anthropic":
        return "anthropic"
    if adapter == "google":
        return "gemini"
    if adapter == "openai" and model.startswith(("gpt-", "o1", "o3", "o4")):
        return "openai-tiles"
    return "qwen-vl"


def image_tokens(rule: str, model: str, width: int, height: int, detail: str = "high") -> int:
    """Tokens of one image of ``width`` x ``height`` pixels as sent, by ``rule``."""
    if width <= 0 or height <= 0:
        return 0
    if rule == "openai-tiles":
        family = next((f for f in OPENAI_TILES if model.startswith(f)), "gpt-4o")
        return OPENAI_TILES[family].tokens(width, height, detail)
    if rule == "anthropic":
        return anthropic_tokens(width, height)
    if rule == "gemini":
        return gemini_tokens(width, height)
    return qwen_tokens(width, height)
