"""The strict reading of a row's ground truth, and why a cell gives none.

Each reader returns the truth, or an :class:`Unread` naming why the case cannot be scored: the cell is
empty (``truth_missing``; 27's null IMT, "not measurable", is one), it is there but cannot be read
(``truth_unreadable``), or the label it holds is not among the row's options (``truth_not_an_option``: no
answer could be right). The verdict carries the reason, so no case leaves a score without a line saying so.
The official scorer reads truth its own way (:mod:`u2eval.scoring.official`).
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from u2eval.benchmark.sectors import NOT_VISIBLE, sector_from_centre
from u2eval.benchmark.tasks import DatasetSpec

UnreadReason = Literal["truth_missing", "truth_unreadable", "truth_not_an_option"]


@dataclass(frozen=True)
class Unread:
    """Why a truth cell gives no truth: the verdict's ``not_counted`` reason and a detail for people."""

    reason: UnreadReason
    detail: str


def _real(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


# Normalised coordinates, with room for rounding at the image border; beyond it they are pixels or garbage.
_NEAR_UNIT = (-0.01, 1.01)


def _blank(cell: str | None) -> bool:
    return cell is None or not cell.strip()


def _first_structure(data: object) -> object:
    # The official rule: a dict's first value, or the first value of a list's first dict.
    if isinstance(data, dict):
        return next(iter(data.values()), None)
    if isinstance(data, list | tuple) and data and isinstance(data[0], dict):
        return next(iter(data[0].values()), None)
    return data


def read_location(cell: str | None, column: str = "gt_bbox") -> str | Unread:
    """The sector of the first structure's centre ``[cx, cy, ...]`` (normalised coordinates) in a ``gt_bbox``
    / ``keypoints`` cell. An empty cell, an empty dict or list, or a structure without coordinates (None, [])
    is 'not visible', as the dataset means it; a cell that is not a literal, or coordinates that are not two
    numbers, are unreadable. Same sector rule as the reference, but read as a Python literal (apostrophes in
    names, tuples and None are fine) instead of the reference's quote-swapping JSON."""
    if _blank(cell):
        return NOT_VISIBLE
    data = literal_cell(cell)
    if data is None:
        return Unread("truth_unreadable", f"{column} is not a Python literal")
    if isinstance(data, dict | list | tuple) and not data:
        return NOT_VISIBLE
    coords = _first_structure(data)
    if coords is None or (isinstance(coords, list | tuple) and not coords):
        return NOT_VISIBLE
    if coords is data or not isinstance(coords, list | tuple) or len(coords) < 2:
        return Unread("truth_unreadable", f"{column} holds no {{name: [x, y, ...]}} structure")
    cx, cy = _real(coords[0]), _real(coords[1])
    if cx is None or cy is None:
        return Unread("truth_unreadable", f"{column}'s first coordinates are not two finite numbers")
    if not (_NEAR_UNIT[0] <= cx <= _NEAR_UNIT[1] and _NEAR_UNIT[0] <= cy <= _NEAR_UNIT[1]):
        return Unread("truth_unreadable", f"{column}'s centre is outside [0, 1] (pixels, not normalised?)")
    return sector_from_centre(cx, cy)


def read_label(cell: str | None, dataset: DatasetSpec, options: Sequence[str] = ()) -> str | Unread:
    """The class label of a row, as written. ``anatomy_dict`` cells hold a dict whose 'Anatomy' value is the
    label (lower-cased, as the scorer does); integer labels become their digits ('2.0' -> '2'); a one-element
    list literal "['benign']" gives its element. With ``options``, a label outside them is not an option."""
    if cell is None or not cell.strip():
        return Unread("truth_missing", "class_label is empty")
    data = literal_cell(cell)
    if dataset.truth_format == "anatomy_dict":
        value = data.get("Anatomy") if isinstance(data, dict) else None
        label = (value if isinstance(value, str) else cell).strip().lower()
    else:
        if isinstance(data, list | tuple) and len(data) == 1:
            data = data[0]
        if dataset.int_labels and (number := _real(data)) is not None and number.is_integer():
            label = str(int(number))
        else:  # plain labels ('benign', 'None', '4A') are not literals: the cell itself is the label
            label = (data if isinstance(data, str) else cell).strip()
    if options and _label_key(label) not in {_label_key(o) for o in options}:
        return Unread("truth_not_an_option", "class_label is not among the row's options")
    return label


def _label_key(label: str) -> str:
    return " ".join(label.split()).lower()


def measurement_key(key: str) -> str:
    """How measurement keys are matched: case, spaces, hyphens and underscores do not matter."""
    return re.sub(r"[\s_-]+", "", key).lower()


def _measurement_value(data: dict[object, object], wanted: str) -> tuple[str, object] | Unread:
    matches = [k for k in data if isinstance(k, str) and measurement_key(k) == measurement_key(wanted)]
    if len(matches) == 1:
        return matches[0], data[matches[0]]
    if not matches and len(data) == 1:  # a one-key dict: whatever it is called, it is the measurement
        key = next(iter(data))
        return str(key), data[key]
    keys = ", ".join(repr(k) for k in data)
    return Unread("truth_unreadable", f"measurement has no key like {wanted!r} (keys: {keys})")


def read_measurement(cell: str | None, dataset: DatasetSpec) -> float | Unread:
    """The dataset's measurement from a dict cell (a list of dicts uses the first; a list value its first
    element, as 27's IMT). The key is ``dataset.measurement_key`` matched without regard to case, spaces,
    hyphens and underscores, or the only key of a one-key dict. A null value (27: not measurable) is
    ``truth_missing``; anything that is not a finite number is unreadable."""
    if cell is None or not cell.strip():
        return Unread("truth_missing", "measurement is empty")
    data = literal_cell(cell)
    if isinstance(data, list | tuple) and data:
        data = data[0]
    if not isinstance(data, dict) or not data:
        return Unread("truth_unreadable", "measurement is not a {name: value} dict")
    found = _measurement_value(data, dataset.measurement_key or "")
    if isinstance(found, Unread):
        return found
    key, value = found
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    if value is None:
        return Unread("truth_missing", f"measurement {key!r} is null (not measured)")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return Unread("truth_unreadable", f"measurement {key!r} is not a number")
    number = _real(value)
    if number is None:
        return Unread("truth_unreadable", f"measurement {key!r} is not a finite number")
    return number


def read_text(cell: str | None, column: str) -> str | Unread:
    """A reference text, stripped; an empty cell has none."""
    text = (cell or "").strip()
    return text if text else Unread("truth_missing", f"{column} is empty")


# Plain values for callers that need a truth whatever the cell holds (stand-in models, tests).


def location_truth(cell: str | None) -> str:
    """``read_location``, 'not visible' where it cannot read the cell."""
    found = read_location(cell)
    return NOT_VISIBLE if isinstance(found, Unread) else found


def label_truth(cell: str | None, dataset: DatasetSpec) -> str:
    """``read_label`` without an options check, '' where it cannot read the cell."""
    found = read_label(cell, dataset)
    return "" if isinstance(found, Unread) else found


def measurement_truth(cell: str | None, dataset: DatasetSpec) -> float | None:
    """``read_measurement``, None where it cannot read the cell."""
    found = read_measurement(cell, dataset)
    return None if isinstance(found, Unread) else found


def literal_cell(cell: str | None) -> object:
    """A Python-literal cell (the dataset's single-quoted dicts and lists) via ``ast.literal_eval``;
    None for a missing or malformed cell."""
    if cell is None:
        return None
    try:
        return ast.literal_eval(cell.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
