"""Box conventions: golden strings of each model family, the ranges and frames, and the registry's errors.

Expected boxes are worked out by hand from each convention's definition (docs/grounded.md), not by the code
under test: e.g. Gemini's ``[290, 310, 610, 570]`` is (ymin, xmin, ymax, xmax) / 1000.
"""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from u2eval.errors import ConfigError
from u2eval.grounded.boxes import (
    CONVENTIONS,
    Ungroundable,
    format_regions,
    get_convention,
    parse_regions,
    smart_resize,
)
from u2eval.grounded.regions import mask_to_array
from u2eval.models.registry import load_preset
from u2eval.records import Box, Point, Regions

# Backtracking gone exponential takes hours; no load stretches these few milliseconds to 30 s. A guard
# against the former, not a speed claim (speed is measured in bench/).
HOURS_GUARD_S = 30.0

FRAME = (800, 600)


def boxes(text: str, spec: str, frame: tuple[int, int] | None = FRAME) -> list[tuple[float, float, float, float]]:
    regions = parse_regions(text, get_convention(spec), frame)
    return [(b.x0, b.y0, b.x1, b.y1) for b in regions.boxes]


def close(got: list[tuple[float, ...]], want: list[tuple[float, ...]]) -> bool:
    return len(got) == len(want) and all(np.allclose(g, w, atol=1e-9) for g, w in zip(got, want, strict=True))


# ------------------------------------------------------------------------------------ golden strings


def test_pixels_are_read_against_the_image_sent() -> None:
    assert close(
        boxes("The lesion is at [212, 148, 391, 310].", "pixels"), [(212 / 800, 148 / 600, 391 / 800, 310 / 600)]
    )
    regions = parse_regions("Point (400, 150) and box (0, 0, 800, 600)", get_convention("pixels"), FRAME)
    assert regions.points == [Point(x=0.5, y=0.25)]
    assert [(b.x0, b.y0, b.x1, b.y1) for b in regions.boxes] == [(0.0, 0.0, 1.0, 1.0)]
    with pytest.raises(Ungroundable, match="image size is unknown"):
        boxes("[212, 148, 391, 310]", "pixels", None)
    with pytest.raises(Ungroundable, match="801"):
        boxes("[0, 0, 801, 10]", "pixels")


def test_relative_boxes_and_points() -> None:
    regions = parse_regions("box [0.31, 0.29, 0.57, 0.61], tip (0.5, 0.25)", get_convention("relative"), None)
    assert close([(b.x0, b.y0, b.x1, b.y1) for b in regions.boxes], [(0.31, 0.29, 0.57, 0.61)])
    assert regions.points == [Point(x=0.5, y=0.25)]
    with pytest.raises(Ungroundable, match="1.4 is outside 0-1"):
        boxes("[0.2, 0.3, 1.4, 0.5]", "relative")


def test_qwen2_vl_with_and_without_its_special_tokens() -> None:
    tokens = "<|object_ref_start|>the nodule<|object_ref_end|><|box_start|>(310,290),(570,610)<|box_end|>"
    regions = parse_regions(tokens, get_convention("qwen2-vl"), None)
    assert close([(b.x0, b.y0, b.x1, b.y1) for b in regions.boxes], [(0.31, 0.29, 0.57, 0.61)])
    assert regions.boxes[0].label == "the nodule" and regions.convention == "qwen2-vl"
    # skip_special_tokens=True (vLLM's default) leaves the bare corners; corners in either order.
    assert close(boxes("Found it: (570,610),(310,290) and (0,0),(1000,1000)", "qwen2-vl", None),
                 [(0.31, 0.29, 0.57, 0.61), (0.0, 0.0, 1.0, 1.0)])  # fmt: skip
    with pytest.raises(Ungroundable, match="1200"):
        boxes("(10,10),(1200,30)", "qwen2-vl", None)


def test_smart_resize_as_the_qwen_processor_does() -> None:
    assert smart_resize(800, 600) == (812, 588)  # 28.57 -> 29 x 28, 21.43 -> 21 x 28
    assert smart_resize(112, 82) == (112, 84)
    # 1988 x 1512 > max_pixels: scaled by sqrt(2000 * 1500 / 1003520) = 1.729, floored to multiples of 28.
    assert smart_resize(2000, 1500, max_pixels=1003520) == (1148, 840)
    assert smart_resize(20, 20) == (56, 56)  # up to min_pixels 3136 = 56 x 56
    with pytest.raises(Ungroundable, match="aspect ratio"):
        smart_resize(5000, 10)


def test_qwen25_vl_json_is_in_pixels_of_the_resized_input() -> None:
    text = (
        'Here you go:\n```json\n[\n  {"bbox_2d": [203, 147, 406, 294], "label": "lesion"},\n'
        '  {"point_2d": [406, 294], "label": "centre \\"A\\""}\n]\n```'
    )
    regions = parse_regions(text, get_convention("qwen2.5-vl"), FRAME)  # the model saw 812 x 588
    assert close([(b.x0, b.y0, b.x1, b.y1) for b in regions.boxes], [(203 / 812, 147 / 588, 0.5, 0.5)])
    assert regions.points == [Point(x=0.5, y=0.5, label='centre "A"')]
    assert regions.boxes[0].label == "lesion"
    big = get_convention("qwen2.5-vl:max_pixels=1003520")
    # 2000 x 1500 under 1,003,520 pixels is resized to 1148 x 840: a box to (574, 420) is the image's half
    assert close(boxes('[{"bbox_2d": [0, 0, 574, 420]}]', big.spec, (2000, 1500)), [(0.0, 0.0, 0.5, 0.5)])
    with pytest.raises(Ungroundable, match="model input"):
        boxes('[{"bbox_2d": [0, 0, 900, 10]}]', "qwen2.5-vl")  # wider than the 812-pixel input
    with pytest.raises(Ungroundable, match="image size is unknown"):
        boxes('[{"bbox_2d": [0, 0, 9, 10]}]', "qwen2.5-vl", None)


def test_internvl_ref_and_box_tags() -> None:
    assert close(boxes("<ref>lesion</ref><box>[[310, 290, 570, 610]]</box>", "internvl", None),
                 [(0.31, 0.29, 0.57, 0.61)])  # fmt: skip
    two = "<ref>nodules</ref><box>[[0, 0, 100, 100], [500, 500, 1000, 1000]]</box>"
    regions = parse_regions(two, get_convention("internvl"), None)
    assert [b.label for b in regions.boxes] == ["nodules", "nodules"]
    assert close([(b.x0, b.y0, b.x1, b.y1) for b in regions.boxes], [(0, 0, 0.1, 0.1), (0.5, 0.5, 1.0, 1.0)])
    assert close(boxes("lesion[[310, 290, 570, 610]]", "internvl", None), [(0.31, 0.29, 0.57, 0.61)])


def test_gemini_is_y_first_on_0_to_1000() -> None:
    text = '```json\n[{"box_2d": [290, 310, 610, 570], "label": "lesion"}, {"point": [250, 500], "label": "tip"}]\n```'
    regions = parse_regions(text, get_convention("gemini"), None)
    assert close([(b.x0, b.y0, b.x1, b.y1) for b in regions.boxes], [(0.31, 0.29, 0.57, 0.61)])
    assert regions.points == [Point(x=0.5, y=0.25, label="tip")]


def test_gemini_masks_cover_their_box_only() -> None:
    # The box spans x 10-60 and y 5-30 pixels of a 100 x 50 image; the map has that size, so no resampling.
    window = np.zeros((25, 50), dtype=np.uint8)
    window[:, :25] = 200  # left half of the box is inside (probability 200 > 127)
    window[:, 25:] = 100  # right half is not
    buffer = io.BytesIO()
    Image.fromarray(window).save(buffer, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    text = f'[{{"box_2d": [100, 100, 600, 600], "mask": "{uri}", "label": "lesion"}}]'
    regions = parse_regions(text, get_convention("gemini"), (100, 50))
    pixels = mask_to_array(regions.masks[0])
    expected = np.zeros((50, 100), dtype=bool)
    expected[5:30, 10:35] = True
    assert np.array_equal(pixels, expected)
    without_size = parse_regions(text, get_convention("gemini"), None)  # the mask is left out, the box kept
    assert len(without_size.boxes) == 1 and without_size.masks == []


def test_deepseek_vl2_is_on_0_to_999() -> None:
    text = "<|ref|>The giraffe at the back.<|/ref|><|det|>[[580, 270, 999, 900]]<|/det|>"
    regions = parse_regions(text, get_convention("deepseek-vl2"), None)
    assert close([(b.x0, b.y0, b.x1, b.y1) for b in regions.boxes], [(580 / 999, 270 / 999, 1.0, 900 / 999)])
    assert regions.boxes[0].label == "The giraffe at the back."
    assert close(boxes("The lesion.[[0, 0, 999, 999]]", "deepseek-vl2", None), [(0.0, 0.0, 1.0, 1.0)])
    with pytest.raises(Ungroundable, match="1000 is outside 0-999"):
        boxes("<|det|>[[0, 0, 1000, 10]]<|/det|>", "deepseek-vl2", None)


def test_one_string_means_different_boxes_under_different_conventions() -> None:
    text = "[290, 310, 610, 570]"
    assert close(boxes(text, "pixels"), [(290 / 800, 310 / 600, 610 / 800, 570 / 600)])
    with pytest.raises(Ungroundable):
        boxes(text, "relative")  # never rescaled by guess
    assert boxes(text, "gemini") == []  # not Gemini syntax: no region, not a guess
    assert boxes("upper left", "qwen2-vl") == []


def test_example_of_every_convention_reads_to_a_box() -> None:
    for name, entry in CONVENTIONS.items():
        regions = parse_regions(entry.example, get_convention(name), FRAME)
        assert len(regions.boxes) == 1, name
        box = regions.boxes[0]
        assert 0.2 < box.x0 < box.x1 < 0.7 and 0.2 < box.y0 < box.y1 < 0.7, name


# --------------------------------------------------------------------------------- round trips, safety


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(sorted(CONVENTIONS)),
    st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=3),
)
def test_format_then_parse_gives_the_boxes_back(name: str, quads: list[tuple[float, float, float, float]]) -> None:
    convention = get_convention(name)
    given_boxes = [Box(x0=min(a, c), y0=min(b, d), x1=max(a, c), y1=max(b, d), label="lesion") for a, b, c, d in quads]
    text = format_regions(Regions(boxes=given_boxes), convention, FRAME)
    got = parse_regions(text, convention, FRAME).boxes
    tolerance = 1 / 600 + 1e-9 if name in ("pixels", "qwen2.5-vl") else 1 / 999 + 1e-9
    assert len(got) == len(given_boxes)
    for a, b in zip(got, given_boxes, strict=True):
        assert max(abs(a.x0 - b.x0), abs(a.y0 - b.y0), abs(a.x1 - b.x1), abs(a.y1 - b.y1)) <= tolerance


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(CONVENTIONS)),
    st.text(alphabet=st.sampled_from(list('[](){}<>|,.:"0123456789 -ebox_2dpoint'))),
)
def test_parsers_never_fail_except_as_ungroundable(name: str, text: str) -> None:
    try:
        regions = parse_regions(text, get_convention(name), FRAME)
    except Ungroundable:
        return
    for box in regions.boxes:
        assert 0 <= box.x0 <= box.x1 <= 1 and 0 <= box.y0 <= box.y1 <= 1


# -------------------------------------------------------------------------------------- registry


def test_unknown_names_and_parameters_are_config_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        get_convention("qwen3")
    assert "qwen3" in str(caught.value)
    for name in CONVENTIONS:
        assert name in str(caught.value)  # the message lists every known convention
    with pytest.raises(ConfigError, match="no parameter 'max_pixels'"):
        get_convention("gemini:max_pixels=10")
    with pytest.raises(ConfigError, match="positive integer"):
        get_convention("qwen2.5-vl:max_pixels=lots")


def test_spec_is_canonical() -> None:
    assert get_convention("qwen2.5-vl:max_pixels=12845056").spec == "qwen2.5-vl"  # the default is left out
    assert get_convention(" qwen2.5-vl:min_pixels=100,max_pixels=1003520 ").spec == (
        "qwen2.5-vl:max_pixels=1003520,min_pixels=100"
    )


def test_a_preset_chooses_its_convention_and_a_wrong_one_names_the_preset(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("name: good\nadapter: vllm\nmodel: m\nbox_convention: internvl\n", encoding="utf-8")
    assert load_preset(good).box_convention == "internvl"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nadapter: vllm\nmodel: m\nbox_convention: yolo\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*unknown box convention 'yolo'"):
        load_preset(bad)


# ------------------------------------------------------------------------------- hostile or cut answers


@pytest.mark.parametrize(
    ("name", "opener", "scale"),
    [("deepseek-vl2", "<|ref|>lesion<|/ref|><|det|>[", 999), ("internvl", "<ref>lesion</ref><box>[", 1000)],
)
def test_an_answer_cut_at_max_tokens_keeps_its_whole_boxes_in_linear_time(name: str, opener: str, scale: int) -> None:
    # Items separated by newlines only, and no closing bracket: the answer stopped at max_tokens. The old
    # pattern backtracked exponentially here (7 s at 20 items, 101 s at 24) and found nothing.
    text = opener + "[100, 200, 300, 400]\n" * 2000 + "[100, 2"
    started = time.perf_counter()
    regions = parse_regions(text, get_convention(name), None)
    assert time.perf_counter() - started < HOURS_GUARD_S
    assert len(regions.boxes) == 2000
    first = regions.boxes[0]
    assert close([(first.x0, first.y0, first.x1, first.y1)], [(100 / scale, 200 / scale, 300 / scale, 400 / scale)])
    assert {b.label for b in regions.boxes} == {"lesion"}
    # Without any tag, '[[' opens the list the same way.
    assert len(parse_regions("[" + "[1, 2, 3, 4] " * 50, get_convention(name), None).boxes) == 50


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("internvl", "<ref>" * 20000 + "[[1, 2, 3, 4]]"),
        ("deepseek-vl2", "<|ref|>" * 20000 + "<|det|>[[1, 2, 3, 4]]"),
        ("qwen2-vl", "<|object_ref_start|>" * 20000 + "(1,2),(3,4)"),
        ("gemini", '{"box_2d": [1, 2, 3, 4], "label": "' + "{" * 20000),
        ("qwen2.5-vl", "[" * 3000 + '{"bbox_2d": [1, 2, 3, 4]}'),
    ],
)
def test_repeated_opening_tags_cost_linear_time(name: str, text: str) -> None:
    started = time.perf_counter()
    regions = parse_regions(text, get_convention(name), FRAME)
    assert time.perf_counter() - started < HOURS_GUARD_S
    assert len(regions.boxes) == (0 if name == "gemini" else 1)  # the cut Gemini object has no end


def test_a_label_is_the_ref_right_before_its_box_not_text_across_tags() -> None:
    text = "<ref>cyst</ref> is not shown, but <ref>nodule</ref><box>[[1, 2, 3, 4]]</box>"
    assert [b.label for b in parse_regions(text, get_convention("internvl"), None).boxes] == ["nodule"]
    text = "<|object_ref_start|>a<|object_ref_end|> and <|object_ref_start|>b<|object_ref_end|>(1,2),(3,4)"
    assert [b.label for b in parse_regions(text, get_convention("qwen2-vl"), None).boxes] == ["b"]


def test_json_objects_with_nested_objects_are_read() -> None:
    text = '[{"box_2d": [100, 100, 500, 500], "meta": {"a": 1}, "label": "lesion"}]'
    regions = parse_regions(text, get_convention("gemini"), None)
    assert close([(b.x0, b.y0, b.x1, b.y1) for b in regions.boxes], [(0.1, 0.1, 0.5, 0.5)])
    assert regions.boxes[0].label == "lesion"
    qwen = '```json\n[{"bbox_2d": [0, 0, 406, 294], "attributes": {"shape": {"kind": "oval"}}}]\n```'
    assert close(boxes(qwen, "qwen2.5-vl"), [(0.0, 0.0, 0.5, 0.5)])
    # A list cut short keeps its whole objects; an object that is almost JSON still reads.
    cut = '[{"box_2d": [100, 100, 500, 500]}, {"box_2d": [600, 600, 9'
    assert len(parse_regions(cut, get_convention("gemini"), None).boxes) == 1
    loose = "{'ignored': 1} {\"box_2d\": [100, 100, 500, 500], label: lesion}"
    assert len(parse_regions(loose, get_convention("gemini"), None).boxes) == 1


def _mask_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_a_gemini_mask_that_cannot_be_used_drops_only_the_mask() -> None:
    window = _mask_uri(Image.fromarray(np.full((25, 50), 200, dtype=np.uint8)))
    text = f'[{{"box_2d": [100, 100, 600, 600], "mask": "{window}"}}]'
    regions = parse_regions(text, get_convention("gemini"), None)  # no image size: the box needs none
    assert close([(b.x0, b.y0, b.x1, b.y1) for b in regions.boxes], [(0.1, 0.1, 0.6, 0.6)])
    assert regions.masks == [] and regions.notes and "image size is unknown" in regions.notes[0]
    # A decompression bomb (a 20000 x 20000 1-bit PNG, 50 kB) is refused before it is decoded.
    bomb = _mask_uri(Image.new("1", (20000, 20000)))
    started = time.perf_counter()
    regions = parse_regions(f'[{{"box_2d": [100, 100, 600, 600], "mask": "{bomb}"}}]', get_convention("gemini"), FRAME)
    assert time.perf_counter() - started < HOURS_GUARD_S
    assert len(regions.boxes) == 1 and regions.masks == [] and "too large" in regions.notes[0]
    big = _mask_uri(Image.new("1", (4097, 4096)))  # under Pillow's own limit, over a box window's
    regions = parse_regions(f'[{{"box_2d": [100, 100, 600, 600], "mask": "{big}"}}]', get_convention("gemini"), FRAME)
    assert regions.masks == [] and "4097 x 4096 pixels is too large" in regions.notes[0]
