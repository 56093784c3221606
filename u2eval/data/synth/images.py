"""The pixels of the synthetic set (``u2eval.data.synth.generate``): portable random numbers, ultrasound-like
fan images with elliptic structures, their masks and boxes, and a PNG encoder whose stored deflate blocks keep
the bundled sample byte-identical on any zlib build."""

from __future__ import annotations

import base64
import io
import math
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, TypeVar

import numpy as np
import numpy.typing as npt
from PIL import Image

Size = Literal["sample", "full"]
T = TypeVar("T")
U8 = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Profile:
    width: tuple[int, int]
    aspect: tuple[float, float]  # height / width
    png_level: int | None  # None: stored deflate blocks (byte-stable everywhere)
    jpeg_quality: int


PROFILES: Mapping[str, Profile] = {
    "sample": Profile(width=(96, 128), aspect=(0.72, 0.78), png_level=None, jpeg_quality=85),
    "full": Profile(width=(600, 1000), aspect=(0.75, 0.8), png_level=1, jpeg_quality=90),
}


# ---------------------------------------------------------------------------------------------- randomness


class Rng:
    """Portable random numbers: the raw PCG64 stream, seeded through SeedSequence (both frozen by NEP 19)."""

    def __init__(self, *key: int | str) -> None:
        words = [k if isinstance(k, int) else zlib.crc32(k.encode()) for k in key]
        self._bits = np.random.PCG64(np.random.SeedSequence(words))

    def random(self) -> float:
        return (int(self._bits.random_raw()) >> 11) * 2.0**-53

    def uniform(self, lo: float, hi: float, ndigits: int = 4) -> float:
        return round(lo + (hi - lo) * self.random(), ndigits)

    def randint(self, lo: int, hi: int) -> int:
        """Inclusive of both ends."""
        return lo + int(self.random() * (hi - lo + 1))

    def choice(self, items: Sequence[T]) -> T:
        return items[int(self.random() * len(items))]

    def noise(self, n: int) -> U8:
        raw = np.asarray(self._bits.random_raw((n + 7) // 8), dtype="<u8")
        return raw.view(np.uint8)[:n]


# ---------------------------------------------------------------------------------------------- images

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Speckle: squaring skews the uniform bytes towards dark like Rayleigh noise; dropping 3 bits keeps full-size
# PNGs in the 100-300 KB range of real scans.
_SPECKLE_LUT: U8 = ((np.arange(256, dtype=np.uint32) ** 2 >> 8) & 0xF8).astype(np.uint8)


@dataclass(frozen=True)
class Blob:
    """An ellipse in normalised centre format, drawn brighter (or darker) than the speckle. ``snap``: a
    centre lying exactly on a sector threshold is drawn centred on it (or, where the pixel grid cannot, just
    past it), so the drawn structure's extent falls in the same sector as its annotation."""

    cx: float
    cy: float
    w: float
    h: float
    delta: int
    snap: bool = False


def _deflate_stored(data: bytes) -> bytes:
    """A zlib stream of stored blocks: valid for every inflater, identical from every build."""
    out = bytearray(b"\x78\x01")
    step = 65535
    for start in range(0, max(len(data), 1), step):
        chunk = data[start : start + step]
        final = 1 if start + step >= len(data) else 0
        out += bytes([final]) + struct.pack("<HH", len(chunk), len(chunk) ^ 0xFFFF) + chunk
    out += struct.pack(">I", zlib.adler32(data))
    return bytes(out)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def encode_png(rows: U8, *, width: int, bit_depth: int, level: int | None) -> bytes:
    """A greyscale PNG from packed scanlines (h, rowbytes); filter 0 on every row."""
    height = rows.shape[0]
    raw = np.zeros((height, rows.shape[1] + 1), dtype=np.uint8)
    raw[:, 1:] = rows
    data = raw.tobytes()
    idat = _deflate_stored(data) if level is None else zlib.compress(data, level)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return _PNG_SIGNATURE + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


@lru_cache(maxsize=64)
def _fan(width: int, height: int) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.uint16]]:
    """The sector a curvilinear probe images (apex above the top edge), and a gain falling with depth."""
    ys, xs = np.ogrid[0:height, 0:width]
    dx = xs.astype(np.int64) * 2 - width  # doubled coordinates keep everything integral
    dy = (ys.astype(np.int64) + height // 8) * 2
    r2 = dx * dx + dy * dy
    inner, outer = (height // 4) * 2, (height + height // 8) * 2
    # |dx| <= dy * tan(40 deg), with tan(40 deg) ~ 839/1000
    inside = (np.abs(dx) * 1000 <= dy * 839) & (r2 >= inner * inner) & (r2 <= outer * outer)
    gain = (256 - (np.arange(height, dtype=np.int64) * 112) // height).astype(np.uint16)[:, None]
    inside.setflags(write=False)
    gain.setflags(write=False)
    return inside, gain


# The official sector thresholds (facts §4.3): a structure annotated exactly there tests the strict '<'.
_THRESHOLDS = (0.45, 0.55)


def _half_pixels(value: float, size: int, snap: bool) -> int:
    """A centre in half pixels (pixel j spans [2j, 2j + 2)): the middle of the pixel holding ``value``,
    or for a snapped threshold the first half-pixel position at or past it."""
    if snap and value in _THRESHOLDS:
        return math.ceil(2 * size * value - 1e-9)
    return 2 * int(value * size) + 1


def _ellipse(width: int, height: int, blob: Blob) -> tuple[slice, slice, npt.NDArray[np.bool_]]:
    """The window holding an ellipse and its mask inside that window, in integer arithmetic on doubled
    coordinates, so the pixel set is exactly symmetric about its centre (and its extent's centre is it)."""
    mx, my = _half_pixels(blob.cx, width, blob.snap), _half_pixels(blob.cy, height, blob.snap)
    rx, ry = 2 * max(int(blob.w * width) // 2, 1), 2 * max(int(blob.h * height) // 2, 1)
    x0, x1 = max(-((rx + 1 - mx) // 2), 0), min((mx + rx - 1) // 2 + 1, width)
    y0, y1 = max(-((ry + 1 - my) // 2), 0), min((my + ry - 1) // 2 + 1, height)
    ys, xs = np.ogrid[y0:y1, x0:x1]
    dx, dy = 2 * xs.astype(np.int64) + 1 - mx, 2 * ys.astype(np.int64) + 1 - my
    inside = dx * dx * (ry * ry) + dy * dy * (rx * rx) <= (rx * rx) * (ry * ry)
    return slice(y0, y1), slice(x0, x1), inside


def structure_mask(width: int, height: int, blob: Blob) -> npt.NDArray[np.bool_]:
    mask = np.zeros((height, width), dtype=np.bool_)
    ys, xs, inside = _ellipse(width, height, blob)
    mask[ys, xs] = inside
    return mask


def extent_box(mask: npt.NDArray[np.bool_]) -> list[float]:
    """The ``gt_bbox`` of a drawn structure: its pixel extent in normalised centre format."""
    height, width = mask.shape
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    x0, x1, y0, y1 = int(cols[0]), int(cols[-1]) + 1, int(rows[0]), int(rows[-1]) + 1
    return [round((x0 + x1) / (2 * width), 6), round((y0 + y1) / (2 * height), 6),
            round((x1 - x0) / width, 6), round((y1 - y0) / height, 6)]  # fmt: skip


def render(rng: Rng, width: int, height: int, blobs: Sequence[Blob]) -> U8:
    """Greyscale ultrasound-like pixels: speckle inside a fan, depth attenuation, brighter/darker blobs."""
    noise = rng.noise(width * height).reshape(height, width)
    img = _SPECKLE_LUT[noise].astype(np.int32)
    fan, gain = _fan(width, height)
    img = (img * gain) >> 8
    img += (np.arange(height, dtype=np.int32)[:, None] * 7 // max(height, 1) % 2) * 12  # tissue layers
    for blob in blobs:
        ys, xs, inside = _ellipse(width, height, blob)
        window = img[ys, xs]
        window[inside] += blob.delta
    img[~fan] = 0
    return np.clip(img, 0, 255).astype(np.uint8)


def encode_image(pixels: U8, fmt: str, profile: Profile) -> bytes:
    if fmt == "jpeg":
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "JPEG", quality=profile.jpeg_quality)
        return buf.getvalue()
    return encode_png(pixels, width=pixels.shape[1], bit_depth=8, level=profile.png_level)


def mask_png(mask: npt.NDArray[np.bool_], profile: Profile) -> bytes:
    """A 1-bit segmentation mask (the union of a row's structures), as the grounded scorer reads seg_data."""
    return encode_png(np.packbits(mask, axis=1), width=mask.shape[1], bit_depth=1, level=profile.png_level)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
