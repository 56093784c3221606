"""Controls: does the model look at the image? A control run sends each case's prompt with another image.

- ``no-image``: a uniform grey image (RGB 128, 128, 128) of the case's own width and height, as PNG, in the
  image's place: the prompt keeps its shape (an image, then the text) for every model;
- ``text-only``: no image part at all, only the text (every adapter accepts such a message);
- ``other-image``: the image of another case of the same task and dataset, chosen by the run's seed.

The partner of a case is fixed by the seed and the dataset's rows alone, never by which cases a run keeps
(``--limit``, ``--anatomy``, a shard, ``--case-id``), so every part of a run pairs alike. A dataset's rows (every
row of that task and dataset id in the data source) are put in the order of
``sha256("<seed>\\0<task>\\0<dataset id>\\0<file>\\0<row>")`` and read as one cycle: a case gets the image of the
row after its own, or, where that row holds the same image (OD rows share one image per structure) or
cannot be read, of the next one along. A case whose dataset has no other image keeps its own: it is counted
as not controlled (``ControlImages.not_controlled``; the run's manifest lists it and the ablation report says
how many). Partners are read from the data by their place (``u2eval.data.row_places``), one at a time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import struct
import zlib
from collections.abc import Sequence
from functools import lru_cache

from u2eval.benchmark.tasks import TaskSpec
from u2eval.data.image_cells import inspect_image
from u2eval.data.row_places import RowPlace, image_at, task_row_places
from u2eval.data.sources import DataSource
from u2eval.errors import ConfigError, DataError, did_you_mean
from u2eval.records import Case, ImagePart, Prompt

__all__ = ["CONTROLS", "GREY", "ControlImages", "check_control", "grey_png", "partner_cycle", "with_image"]

GREY = 128
# name -> what each case is sent instead of its image, in words (the manifest's ``control.sends``)
CONTROLS: dict[str, str] = {
    "no-image": f"a uniform grey PNG (RGB {GREY},{GREY},{GREY}) of the case's own width and height",
    "text-only": "the text alone, with no image part",
    "other-image": "the image of another case of the same task and dataset, chosen by the run's seed",
}

log = logging.getLogger(__name__)


def check_control(name: str) -> str:
    if name not in CONTROLS:
        raise ConfigError(f"unknown control {name!r}{did_you_mean(name, CONTROLS)}; controls: {', '.join(CONTROLS)}")
    return name


def with_image(prompt: Prompt, image: ImagePart | None) -> Prompt:
    """The prompt with ``image`` in its image part's place, or with no image part at all (None)."""
    parts = tuple(image if isinstance(p, ImagePart) else p for p in prompt.parts)
    return dataclasses.replace(prompt, parts=tuple(p for p in parts if p is not None))


# -- the grey image ---------------------------------------------------------------------------------------

# RFC 1951's length codes 257..285: the shortest length of each, and its extra bits.
_LENGTH_BASE: tuple[int, ...] = (3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99)
_LENGTH_BASE += (115, 131, 163, 195, 227, 258)
_LENGTH_EXTRA = (0,) * 8 + (1,) * 4 + (2,) * 4 + (3,) * 4 + (4,) * 4 + (5,) * 4 + (0,)


class _Bits:
    """A deflate bit stream as text, one '0' or '1' per bit in stream order (linear to build and to turn into
    bytes): values go LSB first, Huffman codes MSB first."""

    def __init__(self) -> None:
        self.pieces: list[str] = []

    def put(self, value: int, bits: int) -> None:
        if bits:
            self.pieces.append(f"{value:0{bits}b}"[::-1])

    def code(self, code: int, bits: int) -> None:
        self.pieces.append(f"{code:0{bits}b}")

    def symbol(self, value: int) -> None:  # the fixed Huffman code of a literal/length value
        if value < 144:
            self.code(0x30 + value, 8)
        elif value < 256:
            self.code(0x190 + value - 144, 9)
        elif value < 280:
            self.code(value - 256, 7)
        else:
            self.code(0xC0 + value - 280, 8)

    def run(self, length: int) -> None:  # the previous byte, ``length`` times more (3..258): distance 1
        index = max(i for i, base in enumerate(_LENGTH_BASE) if base <= length)
        self.symbol(257 + index)
        self.put(length - _LENGTH_BASE[index], _LENGTH_EXTRA[index])
        self.code(0, 5)  # distance code 0: distance 1, no extra bits

    def text(self) -> str:
        return "".join(self.pieces)

    def data(self) -> bytes:
        text = self.text()
        return int(text[::-1] or "0", 2).to_bytes((len(text) + 7) // 8, "little")


def _row_bits(width: int, level: int) -> _Bits:
    """One scan line, filter 0 then ``width`` RGB pixels of ``level``, as fixed-Huffman deflate symbols."""
    bits = _Bits()
    bits.symbol(0)
    bits.symbol(level)
    left = 3 * width - 1  # the rest repeats the byte before it
    while left >= 3:
        length = min(258, left)
        if 0 < left - length < 3:
            length -= 3
        bits.run(length)
        left -= length
    for _ in range(left):
        bits.symbol(level)
    return bits


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def grey_png(width: int, height: int, level: int = GREY) -> bytes:
    """A uniform RGB PNG of ``width`` x ``height`` pixels, all (level, level, level): the same bytes on every
    machine. Its pixel data are deflated here (one fixed-Huffman block of literals and runs), never by a zlib
    build, whose output may differ from one machine to another: the request's store key hashes these bytes."""
    if width < 1 or height < 1:
        raise ValueError(f"an image needs at least one pixel, not {width}x{height}")
    row = _row_bits(width, level)
    stream = _Bits()
    stream.put(1, 1)  # the last block
    stream.put(1, 2)  # fixed Huffman codes
    stream.pieces.append(row.text() * height)
    stream.symbol(256)  # end of block
    line = bytes([0]) + bytes([level]) * (3 * width)
    adler = 1
    for _ in range(height):
        adler = zlib.adler32(line, adler)
    deflated = b"\x78\x01" + stream.data() + struct.pack(">I", adler)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", deflated) + _chunk(b"IEND", b"")


@lru_cache(maxsize=64)
def _grey_part(width: int, height: int) -> ImagePart:
    data = grey_png(width, height)
    return ImagePart(data, "image/png", sha256=hashlib.sha256(data).hexdigest())


# -- the other image ------------------------------------------------------------------------------------


def partner_cycle(places: Sequence[RowPlace], seed: int) -> list[RowPlace]:
    """A dataset's rows in the seed's order, read as a cycle: each row's partner is the next one along."""

    def draw(place: RowPlace) -> str:
        text = f"{seed}\0{place.task}\0{place.dataset_id}\0{place.source_file}\0{place.row_index}"
        return hashlib.sha256(text.encode()).hexdigest()

    return sorted(places, key=draw)


class ControlImages:
    """The image each case is sent under a control (None: no image part), and the cases it could not control."""

    def __init__(self, control: str, source: DataSource, tasks: Sequence[TaskSpec], seed: int) -> None:
        self.control = check_control(control)
        self.source, self.seed = source, seed
        self.tasks = {t.key: t for t in tasks}
        self.not_controlled: list[str] = []  # case ids sent their own image: their dataset has no other
        self._cycles: dict[tuple[str, str], list[RowPlace]] = {}
        self._at: dict[tuple[str, int], int] = {}  # (file, row) -> its position in its dataset's cycle
        self._indexed: set[str] = set()
        self._seen: dict[tuple[str, int], str] = {}  # (file, row) -> its image's sha256 once read ("": unreadable)

    def image(self, case: Case, own: ImagePart) -> ImagePart | None:
        if self.control == "text-only":
            return None
        if self.control == "no-image":
            width, height = case.image_width, case.image_height
            if not width or not height:
                info = inspect_image(case.image)
                width, height = info.width, info.height
            return _grey_part(width, height)
        partner = self._partner(case)
        if partner is None:
            self.not_controlled.append(case.case_id)
            log.warning("%s keeps its own image: dataset %s/%s has no other", case.case_id, case.task, case.dataset_id)
            return own
        return partner

    def _index(self, task: str) -> None:
        if task in self._indexed:
            return
        self._indexed.add(task)
        by_dataset: dict[str, list[RowPlace]] = {}
        for place in task_row_places(self.source, self.tasks[task]):
            by_dataset.setdefault(place.dataset_id, []).append(place)
        for dataset_id, places in by_dataset.items():
            cycle = self._cycles[(task, dataset_id)] = partner_cycle(places, self.seed)
            self._at.update((place.identity, i) for i, place in enumerate(cycle))

    def _partner(self, case: Case) -> ImagePart | None:
        self._index(case.task)
        cycle = self._cycles.get((case.task, case.dataset_id), [])
        at = self._at.get((case.source_file, case.row_index))
        if at is None or at >= len(cycle) or cycle[at].identity != (case.source_file, case.row_index):
            raise DataError(case.case_id, "the other-image control cannot find the case's row in its dataset")
        for step in range(1, len(cycle)):
            place = cycle[(at + step) % len(cycle)]
            known = self._seen.get(place.identity)
            if known is not None and known in ("", case.image_sha256):
                continue  # read before: unreadable (""), or the case's own image again
            try:
                found = image_at(place)
            except (OSError, ValueError) as exc:
                log.warning("other-image: %s:%s skipped as a partner (%s)", place.source_file, place.row_index, exc)
                self._seen[place.identity] = ""
                continue
            self._seen[place.identity] = found.sha256
            if found.sha256 != case.image_sha256:
                return ImagePart(found.data, found.media_type, sha256=found.sha256, b64=found.b64)
        return None
