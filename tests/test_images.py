"""The image budget: untouched when an image fits (read from the header only), resized by fixed rules when
it does not, and every result inside the budget."""

from __future__ import annotations

import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from u2eval.errors import ConfigError
from u2eval.models.images import ImageBudget, fit, image_size


def _encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()


def _gradient(width: int, height: int, mode: str = "L") -> Image.Image:
    img = Image.linear_gradient("L").resize((width, height))
    return img if mode == "L" else img.convert(mode)


def _noise(width: int, height: int) -> bytes:
    return _encode(Image.frombytes("RGB", (width, height), os.urandom(width * height * 3)))


def test_an_image_that_fits_is_returned_untouched_without_decoding_its_pixels() -> None:
    png = _encode(_gradient(300, 200))
    truncated = png[: len(png) // 2]  # the header is intact, the pixels are not: only the header may be read
    for budget in (None, ImageBudget(max_bytes=len(png), max_long_edge=300, max_pixels=60_000)):
        data, media_type, sent = fit(truncated, "image/png", budget)
        assert data is truncated and media_type == "image/png"
        assert (sent.width, sent.height, sent.bytes, sent.resized) == (300, 200, len(truncated), False)


def test_the_long_edge_and_pixel_limits_resize_keeping_the_aspect_and_the_encoding() -> None:
    png = _encode(_gradient(300, 200))
    data, media_type, sent = fit(png, "image/png", ImageBudget(max_long_edge=100))
    assert (media_type, image_size(data), sent.resized) == ("image/png", (100, 66), True)
    assert (sent.width, sent.height, sent.bytes, sent.media_type) == (100, 66, len(data), "image/png")
    data, _, sent = fit(png, "image/png", ImageBudget(max_pixels=6_000))
    assert image_size(data) == (94, 63) and 94 * 63 <= 6_000
    jpeg = _encode(_gradient(300, 200, "RGB"), "JPEG")
    data, media_type, _ = fit(jpeg, "image/jpeg", ImageBudget(max_long_edge=150))
    assert (media_type, image_size(data), Image.open(io.BytesIO(data)).format) == ("image/jpeg", (150, 100), "JPEG")


def test_resizing_is_deterministic() -> None:
    png = _encode(_gradient(257, 129))
    budget = ImageBudget(max_long_edge=64)
    assert fit(png, "image/png", budget) == fit(png, "image/png", budget)


def test_a_png_over_the_byte_limit_becomes_jpeg_95_at_full_size_then_shrinks_if_it_must() -> None:
    noise = _noise(400, 300)  # incompressible: PNG ~360 KB
    data, media_type, sent = fit(noise, "image/png", ImageBudget(max_bytes=len(noise) // 2))
    assert (media_type, image_size(data), sent.resized) == ("image/jpeg", (400, 300), True)
    assert len(data) <= len(noise) // 2
    data, media_type, sent = fit(noise, "image/png", ImageBudget(max_bytes=20_000))
    assert media_type == "image/jpeg" and len(data) <= 20_000 and sent.bytes == len(data)
    assert sent.width < 400 and abs(sent.width / sent.height - 4 / 3) < 0.05


def test_a_type_the_provider_does_not_take_is_reencoded_losslessly() -> None:
    img = _gradient(120, 80, "RGB")
    for fmt, media_type in (("BMP", "image/bmp"), ("GIF", "image/gif")):
        source = _encode(img.quantize() if fmt == "GIF" else img, fmt)
        data, sent_type, sent = fit(source, media_type, ImageBudget(media_types=("image/png", "image/jpeg")))
        assert sent_type == "image/png" and (sent.width, sent.height) == (120, 80)
        expected = Image.open(io.BytesIO(source)).convert("RGB").tobytes()
        assert Image.open(io.BytesIO(data)).convert("RGB").tobytes() == expected


@pytest.mark.parametrize("mode", ["I;16", "P", "LA", "RGBA", "1"])
def test_every_pixel_mode_an_ultrasound_png_may_have_can_be_resized(mode: str) -> None:
    img = _gradient(90, 60).convert("I").point(lambda v: v * 200).convert("I;16") if mode == "I;16" else None
    img = img if img is not None else _gradient(90, 60, "RGB").convert(mode)
    data, media_type, sent = fit(_encode(img), "image/png", ImageBudget(max_long_edge=30))
    assert (media_type, image_size(data), sent.resized) == ("image/png", (30, 20), True)


def test_unreadable_bytes_are_a_value_error() -> None:
    with pytest.raises(ValueError, match="unreadable image"):
        fit(b"not an image", "image/png", None)


def test_a_budget_is_read_from_preset_extra_and_typos_are_config_errors() -> None:
    assert ImageBudget.from_extra({}) is None
    budget = ImageBudget.from_extra({"image_budget": {"max_bytes": 10, "media_types": ["image/png"]}})
    assert budget == ImageBudget(max_bytes=10, media_types=("image/png",))
    assert budget.signature() == "bytes<=10,edge<=None,px<=None,types=image/png"
    with pytest.raises(ConfigError, match="image_budget"):
        ImageBudget.from_extra({"image_budget": {"max_long_egde": 100}})
    with pytest.raises(ConfigError, match="image_budget"):
        ImageBudget.from_extra({"image_budget": {"max_bytes": 0}})


@settings(max_examples=40, deadline=None)
@given(
    width=st.integers(1, 400),
    height=st.integers(1, 400),
    edge=st.one_of(st.none(), st.integers(1, 500)),
    pixels=st.one_of(st.none(), st.integers(1, 200_000)),
)
def test_whatever_comes_out_fits_the_budget(width: int, height: int, edge: int | None, pixels: int | None) -> None:
    png = _encode(_gradient(width, height))
    budget = ImageBudget(max_long_edge=edge, max_pixels=pixels)
    data, _, sent = fit(png, "image/png", budget)
    assert (sent.width, sent.height) == image_size(data) and sent.bytes == len(data)
    assert budget.fits(sent.width, sent.height, sent.bytes, sent.media_type)
    assert sent.resized == (data != png)
    if sent.resized:  # only ever smaller, aspect kept to the pixel
        assert sent.width <= width and sent.height <= height
        assert abs(sent.width * height - sent.height * width) <= max(width, height)
