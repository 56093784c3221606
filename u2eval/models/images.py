"""The explicit image budget: what a provider accepts, and the one place an image may be changed to fit it.

Images go out lossless, in their original bytes and encoding, unless they break the budget a preset states
(``extra.image_budget``). Only then are they resized, and what was actually sent is recorded per case in
``Completion.image_sent``. Resizing follows fixed rules so the same image always becomes the same bytes:

1. The size is read from the header only (Pillow opens lazily); an image that fits is returned untouched.
2. Otherwise the largest size that meets ``max_long_edge`` and ``max_pixels`` is taken, aspect kept, and the
   image is resampled once with LANCZOS.
3. The encoding is kept where it is lossless: PNG stays PNG (as do GIF, BMP and WebP, which become PNG);
   JPEG is re-encoded as JPEG at quality 95. A format the provider does not accept (``media_types``)
   becomes PNG.
4. If the encoded image is still over ``max_bytes``, it becomes JPEG at quality 95 (lossy, but the
   resolution is kept); if that is still over, the size shrinks by the square root of the byte overshoot
   (5% margin) and it is encoded again, a few times at most.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from u2eval.errors import ConfigError
from u2eval.records import ImageSent

JPEG_QUALITY = 95
_MAX_SHRINKS = 6
_LOSSLESS_FORMATS = frozenset({"PNG", "GIF", "BMP", "WEBP"})


class ImageBudget(BaseModel):
    """What one image may be: bytes of the raw (not base64) encoding, the long edge and the pixel count in
    pixels, and the media types accepted as they are. ``None`` means no limit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_bytes: int | None = Field(default=None, gt=0)
    max_long_edge: int | None = Field(default=None, gt=0)
    max_pixels: int | None = Field(default=None, gt=0)
    media_types: tuple[str, ...] | None = None

    @classmethod
    def from_extra(cls, extra: Mapping[str, object]) -> ImageBudget | None:
        """The budget in a preset's ``extra.image_budget``; None when the preset sets none."""
        raw = extra.get("image_budget")
        if raw is None:
            return None
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(f"invalid extra.image_budget: {exc.errors()[0]['msg']} ({raw!r})") from exc

    def signature(self) -> str:
        """A short stable text for the model identity: a different budget may send different pixels."""
        types = ",".join(self.media_types) if self.media_types is not None else "any"
        return f"bytes<={self.max_bytes},edge<={self.max_long_edge},px<={self.max_pixels},types={types}"

    def fits(self, width: int, height: int, size: int, media_type: str) -> bool:
        return (
            (self.max_bytes is None or size <= self.max_bytes)
            and (self.max_long_edge is None or max(width, height) <= self.max_long_edge)
            and (self.max_pixels is None or width * height <= self.max_pixels)
            and (self.media_types is None or media_type in self.media_types)
        )

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        """The largest size with the same aspect that meets the edge and pixel limits."""
        scale = 1.0
        if self.max_long_edge is not None:
            scale = min(scale, self.max_long_edge / max(width, height))
        if self.max_pixels is not None:
            scale = min(scale, math.sqrt(self.max_pixels / (width * height)))
        new_width, new_height = _scaled(width, height, scale)
        # The 1-pixel minimum (and float rounding) can leave a sliver over the pixel limit: trim the long side.
        while self.max_pixels is not None and new_width * new_height > self.max_pixels and new_width + new_height > 2:
            if new_width >= new_height:
                new_width -= 1
            else:
                new_height -= 1
        return new_width, new_height


def _scaled(width: int, height: int, scale: float) -> tuple[int, int]:
    if scale >= 1.0:
        return width, height
    # floor keeps the result inside the limits; a 1-pixel minimum keeps extreme aspect ratios valid.
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the image header, without decoding the pixels."""
    with Image.open(io.BytesIO(data)) as img:
        return img.size


def fit(data: bytes, media_type: str, budget: ImageBudget | None) -> tuple[bytes, str, ImageSent]:
    """The image to send under ``budget``: the original bytes when they fit, else a resized copy.

    Raises ValueError when the bytes are not a readable image.
    """
    try:
        img = Image.open(io.BytesIO(data))
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"unreadable image ({media_type}, {len(data)} bytes): {exc}") from exc
    with img:
        width, height = img.size
        if budget is None or budget.fits(width, height, len(data), media_type):
            return data, media_type, ImageSent(width=width, height=height, bytes=len(data), media_type=media_type)
        try:
            return _resize(img, img.format or "", budget)
        except (OSError, SyntaxError, Image.DecompressionBombError) as exc:  # pixels past a readable header
            raise ValueError(f"image cannot be resized ({media_type}, {width}x{height}): {exc}") from exc


def _resize(img: Image.Image, fmt: str, budget: ImageBudget) -> tuple[bytes, str, ImageSent]:
    pixels = _resampling_ready(img)
    size = budget.target_size(*img.size)
    lossless = fmt in _LOSSLESS_FORMATS
    if not lossless and budget.media_types is not None and "image/jpeg" not in budget.media_types:
        lossless = True  # a provider that takes no JPEG gets PNG
    for _ in range(_MAX_SHRINKS):
        resized = pixels if size == pixels.size else pixels.resize(size, Image.Resampling.LANCZOS)
        data, media_type = _encode(resized, "PNG" if lossless else "JPEG")
        if budget.max_bytes is not None and len(data) > budget.max_bytes and lossless:
            data, media_type = _encode(resized, "JPEG")  # keep the resolution, give up losslessness
        if budget.max_bytes is None or len(data) <= budget.max_bytes:
            sent = ImageSent(width=size[0], height=size[1], bytes=len(data), media_type=media_type, resized=True)
            return data, media_type, sent
        size = _scaled(*size, math.sqrt(budget.max_bytes / len(data)) * 0.95)
    raise ValueError(f"image cannot be made to fit {budget.signature()} ({img.size[0]}x{img.size[1]} {fmt})")


def _resampling_ready(img: Image.Image) -> Image.Image:
    """The pixels in a mode LANCZOS works on (Pillow would fall back to NEAREST for palette images)."""
    if img.mode in {"L", "LA", "RGB", "RGBA", "I", "F"}:
        return img.copy()
    if img.mode.startswith("I;16"):
        return img.convert("I")
    return img.convert("RGBA" if "transparency" in img.info or img.mode in {"PA", "RGBa"} else "RGB")


def _encode(img: Image.Image, fmt: str) -> tuple[bytes, str]:
    out = io.BytesIO()
    if fmt == "JPEG":
        if img.mode not in {"L", "RGB"}:
            img = img.convert("L" if img.mode in {"I", "F", "LA"} else "RGB")
        img.save(out, format="JPEG", quality=JPEG_QUALITY)
        return out.getvalue(), "image/jpeg"
    if img.mode in {"I", "F"}:  # PNG holds 16-bit grey, not 32-bit (Pillow clips to 0..65535)
        img = img.convert("I").convert("I;16")
    img.save(out, format="PNG")
    return out.getvalue(), "image/png"
