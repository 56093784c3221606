"""The official parsing pipeline, bug for bug (facts §4, §9, §10), for the *reference* scoring mode.

The official scorer runs in two stages. Stage (a) rewrites every saved answer: for DD/VRA/LL/OD/KD it
re-extracts an option list from the prompt and replaces the answer by the first option its matcher finds
(or ""); for CVE it replaces the answer by a number string (or 'null'). Stage (b) compares that with the
ground truth read from the TSV with pandas. Stage (b) and the quirk switches live here; stage (a), its option
lists and matcher, in :mod:`u2eval.scoring.official_options`; dataset-level effects (which result files the
table averages) in :mod:`u2eval.scoring.table_rules`.

Each quirk that changes a score is a named switch in :class:`ReferenceQuirks` (all on reproduces the
official numbers); the matcher itself is reproduced as it is, step by step. The option lists are stored
as facts (what stage (a) extracts from each official prompt, checked by running the official extractor),
not as prompt text.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from u2eval.benchmark.sectors import LOCATION_OPTIONS, sector_from_centre
from u2eval.benchmark.tasks import DatasetSpec
from u2eval.data.truth import literal_cell
from u2eval.records import Verdict


@dataclass(frozen=True)
class ReferenceQuirks:
    """One switch per per-case quirk of the official pipeline. Turning one off gives the behaviour the
    benchmark meant at that point, so its effect on a score can be measured on its own."""

    other_option: bool = True  # 'other' is an option whenever the prompt contains the substring (42, 53, 69, 75, ...)
    prompt_mention_options: bool = True  # fetal options the prompt merely mentions are options (50: fetal abdomen)
    leading_space_options: bool = True  # comma-split options keep a leading space (' malignant'); harmless
    od_period_option: bool = True  # OD's last option is 'not visible.': 'not visible' without the period is ""
    center_keyword_first: bool = True  # stage (b) tests 'center' before 'lower center': lower center -> center
    int_label_drop: bool = True  # 44/57: an answer that fails int() leaves the denominator instead of counting wrong
    pandas_na_truth: bool = True  # pandas (>= 2) reads the label 'None' (53) as NaN: such rows can never be right
    json_truth_cells: bool = True  # GT cells are read with quote swapping + json.loads ('Baker's cyst' breaks)
    cve_drop_unparseable: bool = True  # CVE: an answer without a number leaves the denominator
    keypoints_over_bbox: bool = False  # LL/OD truth from `keypoints` when the row has that column (§10.11)
    # Replayed files: records are joined to rows by position after stage (a) drops what it cannot read, so a
    # short file shifts (location, CVE), is skipped (classification) or cut (report), and the report scorer
    # can crash (u2eval.scoring.official_files); off: each row's own answer, as strict joins it.
    row_order_join: bool = True


# The per-case switches that can change a verdict of each capability (the others never reach it); the judge
# turns each one off alone to name the quirks behind a reference verdict (``Verdict.changed_by``).
QUIRKS_BY_CAPABILITY: dict[str, tuple[str, ...]] = {
    "classification": (
        "other_option",
        "prompt_mention_options",
        "leading_space_options",
        "int_label_drop",
        "pandas_na_truth",
        "json_truth_cells",
        "row_order_join",
    ),
    "detection": (
        "other_option",
        "prompt_mention_options",
        "leading_space_options",
        "od_period_option",
        "center_keyword_first",
        "json_truth_cells",
        "keypoints_over_bbox",
        "row_order_join",
    ),
    "regression": ("json_truth_cells", "cve_drop_unparseable", "row_order_join"),
    "generation": ("row_order_join",),
}


# ---------------------------------------------------------------------- stage (a): the option matcher


# ------------------------------------------------------------------- stage (b): classification


# pandas' default NA strings (read_csv, pandas >= 2.0, where 'None' joined the list).
PANDAS_NA = frozenset(
    {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
     "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}
)  # fmt: skip
_NAN_LABEL = "nan"  # a NaN truth: a class no prediction ever equals (sklearn sees it as its own label)


def official_json_cell(cell: str) -> object:
    """A TSV cell as the official scorers read it: single quotes swapped for double, then ``json.loads``."""
    return json.loads(cell.replace("'", '"'))


def _cell_data(cell: str, quirks: ReferenceQuirks) -> object:
    if not quirks.json_truth_cells:
        return literal_cell(cell)
    try:
        return official_json_cell(cell)
    except (ValueError, RecursionError):
        return None


def _anatomy_truth(cell: str | None, quirks: ReferenceQuirks) -> str:
    # The anatomy branch reads the label from the dict's 'Anatomy' key (regex fallback on bad JSON); a
    # missing cell becomes the string 'nan'.
    if cell is None or (quirks.pandas_na_truth and cell in PANDAS_NA):
        return _NAN_LABEL
    data = _cell_data(cell, quirks)
    if isinstance(data, dict) and isinstance(data.get("Anatomy"), str):
        return str(data["Anatomy"]).lower()
    match = re.search(r'"Anatomy":\s*"([^"]+)"', cell) if data is None else None
    return (match.group(1) if match else cell).lower()


def _official_label(text: str) -> str:
    if "[" in text:
        text = text.replace("[", "").replace("]", "")
    return text.lower().strip().strip("'\"")


def reference_label_truth(
    cell: str | None, dataset: DatasetSpec, quirks: ReferenceQuirks | None = None
) -> int | str | None:
    """The truth as stage (b) sees it: an int for an integer label column (44, 57), None for a cell
    pandas reads as NaN, else the normalised string."""
    quirks = quirks or ReferenceQuirks()
    if dataset.truth_format == "anatomy_dict":
        return _official_label(_anatomy_truth(cell, quirks))
    if cell is None or cell == "" or (quirks.pandas_na_truth and cell in PANDAS_NA):
        return None
    if dataset.int_labels and re.fullmatch(r"\s*[+-]?\d+\s*", cell):
        return int(cell)
    return _official_label(cell)


def reference_classification(
    stage_a_output: str, truth_cell: str | None, dataset: DatasetSpec, quirks: ReferenceQuirks | None = None
) -> Verdict:
    """Stage (b) of DD/VRA (facts §4.2): prediction stripped of spaces and quotes, compared lower-cased
    with the normalised truth. On an integer truth the prediction must pass ``int()``; if it does not,
    the case leaves the denominator (``int_label_drop``) or, with that quirk off, counts wrong."""
    quirks = quirks or ReferenceQuirks()
    pred = stage_a_output.strip().strip("'\"")
    truth = reference_label_truth(truth_cell, dataset, quirks)
    if truth is None:  # NaN: never equal; the scorer does not lower-case the prediction on this branch
        return Verdict(prediction=pred, truth=_NAN_LABEL, counted=True, correct=False)
    if isinstance(truth, int):
        try:
            number = int(pred)
        except ValueError:
            return Verdict(prediction=pred, truth=str(truth), counted=not quirks.int_label_drop, correct=False)
        return Verdict(prediction=str(number), truth=str(truth), counted=True, correct=number == truth)
    return Verdict(prediction=pred.lower(), truth=truth, counted=True, correct=pred.lower() == truth)


# ----------------------------------------------------------------------------- stage (b): location

# Word pairs tried when no location word is contained: 'upper'+'left' -> upper left, ..., 'not'+'visible'.
_LOCATION_FALLBACKS = tuple((("middle", "center") if o == "center" else tuple(o.split()), o) for o in LOCATION_OPTIONS)


def reference_location_prediction(stage_a_output: str, quirks: ReferenceQuirks | None = None) -> str:
    """Stage (b) of LL/OD/KD: the first location word contained in the answer, in the official order,
    where 'center' comes before 'lower center' (``center_keyword_first``), so 'lower center' and any
    answer that mentions 'center' after an earlier keyword's place become 'center'. Then word-pair
    fallbacks (or 'central' -> center); otherwise the cleaned answer, which matches no truth."""
    quirks = quirks or ReferenceQuirks()
    text = stage_a_output.strip().lower()
    order = LOCATION_OPTIONS if quirks.center_keyword_first else sorted(LOCATION_OPTIONS, key=len, reverse=True)
    for keyword in order:
        if keyword in text:
            return keyword
    for (first, second), location in _LOCATION_FALLBACKS:
        if (first in text and second in text) or (location == "center" and "central" in text):
            return location
    return text


def _official_first_structure(data: object) -> object:
    if isinstance(data, dict):
        return next(iter(data.values()), None)
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return next(iter(data[0].values()), None)
    return None  # the official code fails on anything else and uses 'nan'


def reference_location_truth(cell: str | None, quirks: ReferenceQuirks | None = None) -> str:
    """The reference truth sector: the first structure's first two values through ``float()`` (numeric
    strings and booleans pass, as in the official code); anything unreadable -> 'not visible'."""
    quirks = quirks or ReferenceQuirks()
    coords = _official_first_structure(None if cell is None else _cell_data(cell, quirks))
    if not isinstance(coords, list | tuple) or len(coords) < 2:
        return "not visible"
    try:
        cx, cy = float(coords[0]), float(coords[1])
    except (ValueError, TypeError, OverflowError):
        return "not visible"
    return "not visible" if math.isnan(cx) or math.isnan(cy) else sector_from_centre(cx, cy)


# ------------------------------------------------------------------------------------ numbers (CVE)

# The official patterns, rewritten to find the same first match in linear time (tests/test_parsing.py checks
# them against the originals): ``\d+\.?\d*`` becomes ``\d+(?:\.\d*)?`` (the same language, without the
# ambiguous split of a digit run between ``\d+`` and ``\d*``: cubic, ~0.4 s on a 400-digit answer, minutes on
# 2,000 digits), and a pattern that starts with a digit run and needs something after it starts only where
# a run starts, ``(?<!\d)`` (a match inside a run implies one at its start, so the first match is the same;
# without it, every position of a long run is tried again: quadratic).
_GENERIC_NUMBER_PATTERNS = (
    r"(?<!\d)(\d+(?:\.\d*)?)\s*(?:mm|cm|ml|g|kg|%)",
    r"(?:value|measurement|result|reading) (?:of |is |approximately |about |around |)(\d+(?:\.\d*)?)",
    r"(?<!\d)(\d+\.\d+)",
    r"(\d+)",
)
# Stage (a)'s per-dataset patterns, first match wins (57: integers only; 50's are commented "IMT").
_NUMBER_PATTERNS: dict[str, tuple[str, ...]] = {
    "57": (
        r"around (\d+)",
        r"value of (\d+)",
        r"value around (\d+)",
        r"indicative of (\d+)",
        r"justify a fat value of (\d+)",
        r"fat value (?:of |around |about )?(\d+)",
        r"fat content (?:of |around |about )?(\d+)",
        r"fat percentage (?:of |around |about )?(\d+)",
        r"(?<!\d)(\d+)%",
        r"(\d+)",
    ),
    "50": (
        r"imt (?:of |is |value |measurement |measures |approximately |about |around |)(\d+(?:\.\d*)?)",
        r"imt (?:of |is |value |measurement |measures |approximately |about |around |)(\d+)",
        r"(?<!\d)(\d+(?:\.\d*)?)\s*(?:mm|millimeters|millimeter)",
        r"(\d+(?:\.\d*)?)",
        r"(\d+)",
    ),
}
_OFFICIAL_MEASUREMENT_KEYS = {"18": "EF", "27": "IMT", "50": "abdominal_circumference", "57": "fat value"}


def reference_stage_a_number(answer: object, dataset_id: str) -> str:
    """Stage (a) for CVE: 'null', the answer itself when it is a plain unsigned number, else the first
    per-dataset pattern's match. No minus sign is read; units are dropped unconverted; on 57 only
    integers ('about 12.5%' -> '5', '5.5 cm' -> '5'); error messages with digits give those digits.
    A JSON value that is not a string: 0, None and the like are 'null'; any other makes stage (a) drop the
    line, which the reader of the kit's files accounts for (here: 'null')."""
    if not isinstance(answer, str) or not answer or answer.lower() == "null":
        return "null"
    if re.match(r"^\d+(?:\.\d*)?$", answer.strip()):
        return answer.strip()
    if not re.search(r"\d", answer):
        return "null"
    text = answer.lower().strip()
    for pattern in _NUMBER_PATTERNS.get(dataset_id, _GENERIC_NUMBER_PATTERNS):
        match = re.search(pattern, text)
        if match:
            return match.group(1)
    return "null"


def reference_number(answer: object, dataset_id: str) -> float | None:
    """Stage (a) then stage (b)'s ``float()``; None where the scorer drops the row. A non-finite value
    (an answer of hundreds of digits) is None here, where the scorer would let it make the RMSE inf."""
    text = reference_stage_a_number(answer, dataset_id).strip()
    if text.lower() == "null":
        return None
    try:
        value = float(text)
    except ValueError:  # unreachable after stage (a), kept as stage (b)'s own guard
        return None
    return value if math.isfinite(value) else None


def official_measurement_key(dataset: DatasetSpec) -> str:
    """The key the official measurement scorer reads for a dataset (its own table; ours for 31, which it never
    scores)."""
    return _OFFICIAL_MEASUREMENT_KEYS.get(dataset.id, dataset.measurement_key or "")


def _official_measurement(data: object, dataset: DatasetSpec) -> object:
    try:
        if isinstance(data, dict):
            if dataset.id == "27":
                return list(data["IMT"])[0]  # a string value gives its first character
            return data[official_measurement_key(dataset)]
        if isinstance(data, list):
            return list(data[0].values())[0]
    except (KeyError, IndexError, TypeError, AttributeError):
        pass
    return None


def reference_measurement_truth(
    cell: str | None, dataset: DatasetSpec, quirks: ReferenceQuirks | None = None
) -> float | None:
    """The reference CVE truth, or None where the scorer skips the row. Where the official code would
    crash on the whole file instead (a null or non-numeric value) or carry a NaN into the RMSE, the row
    is skipped here."""
    quirks = quirks or ReferenceQuirks()
    value = _official_measurement(None if cell is None else _cell_data(cell, quirks), dataset)
    if isinstance(value, list):
        value = value[0] if value else None
    if not isinstance(value, str | int | float):
        return None
    try:
        number = float(value)  # bool passes, as in the official code
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


# ------------------------------------------------------------------------------------------- text


def reference_text(answer: object) -> str:
    """RG/CG hypothesis and reference text: ``.strip()`` only (None -> "")."""
    return answer.strip() if isinstance(answer, str) else ""
