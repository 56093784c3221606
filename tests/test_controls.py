"""Controls: does the model look at the image? The images a control sends in each case's image's place
(u2eval.data.controls): a grey image of the case's size, always the same bytes; another case's image of the
same dataset, read back from its row's place, chosen by the seed, never the case's own."""

from __future__ import annotations

import hashlib
import io
import zlib
from collections import defaultdict
from collections.abc import Iterator, Sequence

import pytest
from PIL import Image

from u2eval.benchmark.tasks import select_tasks
from u2eval.data import tsv
from u2eval.data.controls import ControlImages, grey_png, partner_cycle
from u2eval.data.reader import iter_cases
from u2eval.data.row_places import image_at, task_row_places
from u2eval.data.sources import resolve_source
from u2eval.records import Case, ImagePart


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sample_cases(tasks: Sequence[str] | None = None) -> list[Case]:
    specs = select_tasks(list(tasks) if tasks else None)
    return list(iter_cases(resolve_source("sample", tasks=specs), specs, on_error=print))


# -- the grey image -----------------------------------------------------------------------------------------


def _chunks(png: bytes) -> Iterator[tuple[bytes, bytes]]:
    at = 8
    while at < len(png):
        length = int.from_bytes(png[at : at + 4], "big")
        kind, data = png[at + 4 : at + 8], png[at + 8 : at + 8 + length]
        assert zlib.crc32(kind + data) == int.from_bytes(png[at + 8 + length : at + 12 + length], "big")
        yield kind, data
        at += 12 + length


@pytest.mark.parametrize("size", [(1, 1), (2, 1), (1, 3), (86, 85), (104, 78), (259, 7), (800, 600)])
def test_the_grey_image_is_uniform_grey_rgb_of_the_size_asked(size: tuple[int, int]) -> None:
    png = grey_png(*size)
    with Image.open(io.BytesIO(png)) as image:
        image.load()
        assert image.format == "PNG" and image.mode == "RGB" and image.size == size
        assert image.getextrema() == ((128, 128), (128, 128), (128, 128))
    chunks = list(_chunks(png))
    assert [kind for kind, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    width, height = size
    # zlib checks the stream's adler32 as it inflates: the pixel data are exactly the scan lines, filter 0
    assert zlib.decompress(chunks[1][1]) == (b"\x00" + b"\x80" * 3 * width) * height


def test_the_grey_image_is_the_same_bytes_everywhere() -> None:
    # The store key hashes the image: another machine's zlib must not make another request of the same one.
    assert sha(grey_png(104, 78)) == "bcbdcd70e5bf07c6cb13d12c901cb559513db920632403ecf0b575dc3d0c8283"
    assert len(grey_png(800, 600)) < 12_000  # deflated: a grey image is small, whatever its size
    with pytest.raises(ValueError, match="at least one pixel"):
        grey_png(0, 5)


# -- rows read again by their place ---------------------------------------------------------------------------


def test_records_are_read_again_from_where_they_start() -> None:
    data = (
        b"a\tb\tc\n"
        b"1\tplain\tx\n"
        b'2\t"two\nlines, ""quoted"""\ty\n'
        b"3\tcrlf\tz\r\n"
        b"4\tstray\tcr\r5\tafter\tcr\n"
        b"\n"
        b'6\t"\r\ninside"\tw\n'
        b"7\tlast\tno end"
    )
    placed = tsv.PlacedRecords(io.BytesIO(data))
    seen = []
    for record in placed:
        again = next(tsv.records(tsv.text_lines(io.BytesIO(data[placed.start :]))))
        assert again == record
        seen.append(record)
    assert seen == list(tsv.records(tsv.text_lines(io.BytesIO(data))))
    assert len(seen) == 9 and seen[-1] == ["7", "last", "no end"]


def test_every_rows_image_is_read_back_from_its_place() -> None:
    source = resolve_source("sample")
    places = [p for task in select_tasks(None) for p in task_row_places(source, task)]
    images = {p.identity: image_at(p) for p in places}
    cases = {(c.source_file, c.row_index): c for c in sample_cases()}
    assert images.keys() == cases.keys() and len(images) == 200
    for identity, image in images.items():
        case = cases[identity]
        assert image.sha256 == case.image_sha256 and image.data == case.image
        assert image.media_type == f"image/{case.image_format}"


# -- the partner of each case -------------------------------------------------------------------------------


def _partners(seed: int, tasks: Sequence[str] = ("dd", "od", "cve")) -> dict[str, str | None]:
    specs = select_tasks(list(tasks))
    controls = ControlImages("other-image", resolve_source("sample", tasks=specs), specs, seed)
    found = {}
    for case in sample_cases(tasks):
        image = controls.image(case, ImagePart(case.image, "image/png"))
        found[case.case_id] = image.sha256 if image is not None else None
    assert controls.not_controlled == []
    return found


def test_other_image_is_another_image_of_the_same_dataset_reproducibly_by_seed() -> None:
    cases = {c.case_id: c for c in sample_cases(("dd", "od", "cve"))}
    of_dataset: dict[tuple[str, str], set[str]] = defaultdict(set)
    for case in cases.values():
        of_dataset[(case.task, case.dataset_id)].add(case.image_sha256)
    first, again, other = _partners(0), _partners(0), _partners(1)
    assert first == again  # the same seed, the same pairing
    assert first != other  # another seed, another pairing
    for partners in (first, other):
        for case_id, image in partners.items():
            case = cases[case_id]
            assert image != case.image_sha256  # never its own image
            assert image in of_dataset[(case.task, case.dataset_id)]


def test_the_cycle_is_the_documented_order() -> None:
    source = resolve_source("sample")
    (dd,) = select_tasks(["dd"])
    places = [p for p in task_row_places(source, dd) if p.dataset_id == "21"]
    cycle = partner_cycle(places, 7)
    key = lambda p: sha("\0".join(["7", "dd", "21", p.source_file, str(p.row_index)]).encode())  # noqa: E731
    assert cycle == sorted(places, key=key) and sorted(map(key, cycle)) == list(map(key, cycle))
    controls = ControlImages("other-image", source, [dd], 7)
    by_place = {(c.source_file, c.row_index): c for c in sample_cases(("dd",))}
    for i, place in enumerate(cycle):  # each row gets the image of the next row along (the sample's differ)
        case, after = by_place[place.identity], by_place[cycle[(i + 1) % len(cycle)].identity]
        image = controls.image(case, ImagePart(case.image, "image/png"))
        assert image is not None and image.sha256 == after.image_sha256
