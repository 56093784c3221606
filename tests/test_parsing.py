"""Strict parsers, strict ground truth, and the reference (official) pipeline, quirk by quirk.

Expected values for the reference pipeline were computed by hand from the official code and checked by
running it (facts §4, §9, §10)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from u2eval.benchmark.sectors import LOCATION_OPTIONS, sector_from_centre
from u2eval.benchmark.tasks import DatasetSpec, get_task
from u2eval.data.truth import Unread, label_truth, location_truth, measurement_truth, read_location, read_measurement
from u2eval.scoring.official import (
    ReferenceQuirks,
    reference_classification,
    reference_label_truth,
    reference_location_prediction,
    reference_location_truth,
    reference_measurement_truth,
    reference_number,
    reference_stage_a_number,
    reference_text,
)
from u2eval.scoring.official_options import reference_options, reference_stage_a_option
from u2eval.scoring.strict import parse_location, parse_number, parse_option, parse_text

ALL_OFF = ReferenceQuirks(**{name: False for name in ReferenceQuirks.__dataclass_fields__})

# What the kit saved instead of an answer when a request failed ([EK] batch_test.py: "API call failed: <status>"):
# its digits matter, which is why replayed failure records are infra errors in strict.
REFERENCE_ERROR_TEXT = "API调用失败: 500"


def ds(task: str, dataset_id: str) -> DatasetSpec:
    return get_task(task).dataset(dataset_id)


def stage_a(answer: object, task: str, dataset_id: str, anatomy: str = "", channel: str = "") -> str:
    return reference_stage_a_option(answer, reference_options(task, dataset_id, anatomy, channel)).output


# ================================================================================== strict: options

BENIGN = ("benign", "malignant")
NORMAL3 = ("normal", "benign", "malignant")
LUS = ("0", "1", "2", "3")
BIRADS = ("2", "3", "4A", "4B", "4C", "5")


@pytest.mark.parametrize(
    ("answer", "options", "value"),
    [
        ("benign", BENIGN, "benign"),
        ("**Malignant.**", BENIGN, "malignant"),
        ("'benign'", BENIGN, "benign"),
        ("The lesion is most likely benign.", BENIGN, "benign"),
        ("Not malignant; benign.", BENIGN, "benign"),
        ("abnormal, most likely malignant", NORMAL3, "malignant"),
        ("normal thyroid", ("normal thyroid", "benign", "malignant"), "normal thyroid"),
        ("Normal thyroid gland", ("normal thyroid", "benign", "malignant"), "normal thyroid"),
        ("Appears abnormal", ("Appears abnormal", "Appears normal"), "Appears abnormal"),
        ("appears normal", ("Appears abnormal", "Appears normal"), "Appears normal"),
        ("noninfected", ("infected", "noninfected"), "noninfected"),
        ("infected", ("infected", "noninfected"), "infected"),
        ("non-pancreas cancer", ("non-pancreas cancer", "pancreas cancer"), "non-pancreas cancer"),
        ("Non pancreas cancer", ("non-pancreas cancer", "pancreas cancer"), "non-pancreas cancer"),
        ("pancreas cancer", ("non-pancreas cancer", "pancreas cancer"), "pancreas cancer"),
        ("not visible", ("Not-visible", "Visible"), "Not-visible"),
        ("Visible", ("Not-visible", "Visible"), "Visible"),
        ("Only fetal head", ("None", "OnlyFetalHead", "OnlySymphysisPubis"), "OnlyFetalHead"),
        ("4-chamber view: 4CH", ("2CH", "4CH"), "4CH"),
        ("It is not a 2CH view; 4CH", ("2CH", "4CH"), "4CH"),
        ("left anterior suprapatellar longitudinal with power Doppler", ds("vra", "28").labels,
         "left anterior suprapatellar longitudinal with power Doppler"),
        ("Score 2", LUS, "2"),
        ("2.", LUS, "2"),
        ("**3**", LUS, "3"),
        ("1.0", ("0", "1"), "1"),
        ("BI-RADS 4A", BIRADS, "4A"),
        ("No OA", ds("dd", "28_1").labels, "No OA"),
    ],
)  # fmt: skip
def test_parse_option_finds_the_one_option(answer: str, options: tuple[str, ...], value: str) -> None:
    assert parse_option(answer, options) == parse_option(answer, list(options))
    parsed = parse_option(answer, options)
    assert (parsed.value, parsed.outcome) == (value, "ok")


@pytest.mark.parametrize(
    ("answer", "options", "outcome"),
    [
        ("", BENIGN, "empty"),
        ("   \n", BENIGN, "empty"),
        (None, BENIGN, "empty"),
        ("benign or malignant", BENIGN, "unparseable"),
        ("normal, benign", NORMAL3, "unparseable"),
        ("A", BENIGN, "unparseable"),  # letters are never options
        ("fetal heart", ds("vra", "anatomy").labels, "unparseable"),
        ("Score: 2 out of 3", LUS, "unparseable"),
        ("12", LUS, "unparseable"),
        ("1.5", ("0", "1"), "unparseable"),
        ("BI-RADS 4", BIRADS, "unparseable"),
        ("I'm sorry, I can't help with that.", BENIGN, "refused"),
        ("I'm sorry, I cannot tell whether it is malignant.", BENIGN, "refused"),
        ("I cannot provide a diagnosis.", BENIGN, "refused"),
        ("As an AI, I am not able to interpret medical images.", BENIGN, "refused"),
    ],
)
def test_parse_option_failures(answer: str | None, options: tuple[str, ...], outcome: str) -> None:
    assert parse_option(answer, options).outcome == outcome
    assert parse_option(answer, options).value is None


def test_parse_option_exact_answer_beats_refusal_check() -> None:
    assert parse_option("As an AI", ("As an AI", "other")).value == "As an AI"


# ================================================================================= strict: location


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("upper left", "upper left"),
        ("Top-left", "upper left"),
        ("left upper", "upper left"),
        ("center top", "upper center"),  # column first, with a centre word
        ("middle-upper", "upper center"),
        ("upper-left quadrant", "upper left"),
        ("bottom right", "lower right"),
        ("lower center", "lower center"),  # the reference maps this to center
        ("Lower Centre.", "lower center"),
        ("upper middle", "upper center"),
        ("middle center", "center"),
        ("centre", "center"),
        ("Central", "center"),
        ("mid-left", "middle left"),
        ("center right", "middle right"),
        ("The centre of the lesion lies in the lower right.", "lower right"),
        ("Not visible", "not visible"),
        ("The kidney is not present in this image", "not visible"),
        ("absent", "not visible"),
        ("None", "not visible"),
    ],
)
def test_parse_location(answer: str, value: str) -> None:
    assert parse_location(answer) == parse_location(answer.upper())
    assert (parse_location(answer).value, parse_location(answer).outcome) == (value, "ok")


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        ("upper left or lower right", "unparseable"),
        ("lower left, extending to lower center", "unparseable"),
        ("left", "unparseable"),
        ("somewhere", "unparseable"),
        ("not visible, maybe upper left", "unparseable"),
        ("", "empty"),
        ("I'm unable to determine the location.", "refused"),
    ],
)
def test_parse_location_failures(answer: str, outcome: str) -> None:
    assert parse_location(answer).outcome == outcome


# ================================================================================== strict: numbers


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("55", 55.0),
        ("55%", 55.0),
        ("0.55", 0.55),
        ("5.5 cm", 5.5),  # as written: no unit conversion
        ("0.8 mm", 0.8),
        (".5", 0.5),
        ("-5", -5.0),
        ("EF-55%", 55.0),
        ("40-45%", 42.5),
        ("40 to 45", 42.5),
        ("about 12.5%", 12.5),
        ("Estimated EF is 55%, range 50-60", 55.0),
        ("**250.5**", 250.5),
    ],
)
def test_parse_number(answer: str, value: float) -> None:
    parsed = parse_number(answer)
    assert parsed.outcome == "ok"
    assert parsed.value == pytest.approx(value)


@pytest.mark.parametrize("answer", ["null", "N/A", "Not measurable", "NULL."])
def test_parse_number_null_only_where_allowed(answer: str) -> None:
    parsed = parse_number(answer, nullable=True)
    assert (parsed.value, parsed.outcome) == (None, "ok")
    assert parse_number(answer, nullable=False).outcome == "unparseable"


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [("", "empty"), ("about half", "unparseable"), ("9" * 400, "unparseable"), ("I cannot estimate this.", "refused")],
)
def test_parse_number_failures(answer: str, outcome: str) -> None:
    assert parse_number(answer).outcome == outcome


# ===================================================================================== strict: text


@pytest.mark.parametrize(
    ("answer", "parsed"),
    [
        ("  Fetal phantom, AC plane. ", ("Fetal phantom, AC plane.", "ok")),
        ("Caption: Fetal phantom.", ("Fetal phantom.", "ok")),
        ("**Report:** Liver normal.", ("Liver normal.", "ok")),
        ("report: ", (None, "empty")),
        ("", (None, "empty")),
        ("I'm sorry, I can't assist with that.", (None, "refused")),
    ],
)
def test_parse_text(answer: str, parsed: tuple[str | None, str]) -> None:
    result = parse_text(answer)
    assert (result.value, result.outcome) == parsed


# ============================================================================ property: never raises

ANY_TEXT = st.one_of(st.none(), st.text(), st.text(alphabet="upperlowcntmidhgvsb -.,0123456789%"))


@settings(max_examples=300)
@given(ANY_TEXT, st.sampled_from([BENIGN, LUS, BIRADS, ds("vra", "28").labels, ds("vra", "anatomy").labels]))
def test_parse_option_value_is_an_option(answer: str | None, options: tuple[str, ...]) -> None:
    parsed = parse_option(answer, options)
    assert (parsed.value in options) if parsed.outcome == "ok" else parsed.value is None


@settings(max_examples=300)
@given(ANY_TEXT)
def test_parse_location_value_is_a_location(answer: str | None) -> None:
    parsed = parse_location(answer)
    assert (parsed.value in LOCATION_OPTIONS) if parsed.outcome == "ok" else parsed.value is None


@settings(max_examples=300)
@given(ANY_TEXT, st.booleans())
def test_parse_number_value_is_finite(answer: str | None, nullable: bool) -> None:
    parsed = parse_number(answer, nullable)
    if parsed.outcome != "ok":
        assert parsed.value is None
    elif parsed.value is None:
        assert nullable  # only a nullable dataset accepts 'null' as an answer
    else:
        assert isinstance(parsed.value, float) and math.isfinite(parsed.value)


@settings(max_examples=200)
@given(ANY_TEXT)
def test_parse_text_and_reference_text_never_raise(answer: str | None) -> None:
    parsed = parse_text(answer)
    assert (isinstance(parsed.value, str) and parsed.value) if parsed.outcome == "ok" else parsed.value is None
    assert reference_text(answer) == (answer or "").strip()


@settings(max_examples=300)
@given(ANY_TEXT, st.sampled_from(["dd/44", "dd/40", "vra/03", "vra/74is_visible", "od/09", "ll/04"]))
def test_reference_stage_a_returns_an_option_or_nothing(answer: str | None, where: str) -> None:
    task, dataset_id = where.split("/")
    options = reference_options(task, dataset_id)
    output = stage_a(answer, task, dataset_id)
    assert output in (*options, "")
    if task in ("od", "ll"):  # after stage (a), stage (b) always lands on a location word or ""
        assert reference_location_prediction(output) in (*LOCATION_OPTIONS, "")


@settings(max_examples=300)
@given(st.one_of(st.none(), st.text()), st.sampled_from(["18", "27", "50", "57"]))
def test_reference_number_never_raises(answer: str | None, dataset_id: str) -> None:
    value = reference_number(answer, dataset_id)
    assert value is None or (value >= 0 and math.isfinite(value))  # the reference reads no minus sign


@settings(max_examples=300)
@given(st.one_of(st.none(), st.text(), st.text(alphabet="{}[]'\":,.0123456789 aN")))
def test_truth_readers_never_raise(cell: str | None) -> None:
    assert location_truth(cell) in LOCATION_OPTIONS
    assert reference_location_truth(cell) in LOCATION_OPTIONS
    assert isinstance(label_truth(cell, ds("vra", "anatomy")), str)
    for dataset_id in ("18", "27", "57"):
        for value in (
            measurement_truth(cell, ds("cve", dataset_id)),
            reference_measurement_truth(cell, ds("cve", dataset_id)),
        ):
            assert value is None or math.isfinite(value)


# ============================================================================= strict ground truth


@pytest.mark.parametrize(
    ("cx", "cy", "sector"),
    [
        (0.449, 0.449, "upper left"),
        (0.45, 0.2, "upper center"),  # 0.45 is not < 0.45
        (0.549, 0.2, "upper center"),
        (0.55, 0.2, "upper right"),
        (0.2, 0.45, "middle left"),
        (0.5, 0.5, "center"),
        (0.55, 0.5, "middle right"),
        (0.5, 0.55, "lower center"),
        (0.9, 0.9, "lower right"),
    ],
)
def test_sector_boundaries(cx: float, cy: float, sector: str) -> None:
    assert sector_from_centre(cx, cy) == sector
    assert location_truth(str({"lesion": [cx, cy, 0.1, 0.1]})) == sector
    assert reference_location_truth(str({"lesion": [cx, cy, 0.1, 0.1]})) == sector


@pytest.mark.parametrize(
    ("cell", "strict", "reference"),
    [
        ("{'a': [0.2, 0.8, 0.1, 0.1], 'b': [0.9, 0.1, 0.1, 0.1]}", "lower left", "lower left"),  # first structure
        ("[{'a': [0.9, 0.1]}, {'b': [0.1, 0.1]}]", "upper right", "upper right"),
        ('{"Baker\'s cyst": [0.5, 0.5]}', "center", "not visible"),  # quote swapping breaks the JSON
        ("{'a': (0.5, 0.5)}", "center", "not visible"),  # tuples are not JSON
        ("{'a': ['0.5', '0.5']}", "unreadable", "center"),  # float('0.5') passes in the reference
        ("{'a': [NaN, 0.5]}", "unreadable", "not visible"),
        ("[0.5, 0.5, 0.1, 0.1]", "unreadable", "not visible"),  # a bare box is not a structure
        ("{}", "not visible", "not visible"),
        ("{'a': None}", "not visible", "not visible"),  # a structure without coordinates: not in the image
        (None, "not visible", "not visible"),
        ("  ", "not visible", "not visible"),
        ("garbage", "unreadable", "not visible"),
    ],
)
def test_location_truth_strict_and_reference(cell: str | None, strict: str, reference: str) -> None:
    # Strict says why it cannot read a cell (the case is then not counted); the reference calls it 'not visible'.
    found = read_location(cell)
    assert (found.reason if isinstance(found, Unread) else found) == (
        "truth_unreadable" if strict == "unreadable" else strict
    )
    assert location_truth(cell) == ("not visible" if strict == "unreadable" else strict)
    assert reference_location_truth(cell) == reference


def test_reference_truth_parser_quirk_off_reads_literals() -> None:
    cell = "{'a': (0.5, 0.5)}"
    assert reference_location_truth(cell, replace(ReferenceQuirks(), json_truth_cells=False)) == "center"


@pytest.mark.parametrize(
    ("cell", "dataset", "label"),
    [
        ("benign", ("dd", "21"), "benign"),
        (" None ", ("vra", "53"), "None"),
        ("['benign']", ("dd", "21"), "benign"),
        ("{'Anatomy': 'Fetal', 'View': 'x'}", ("vra", "anatomy"), "fetal"),
        ("Thyroid", ("vra", "anatomy"), "thyroid"),
        ("2", ("dd", "44"), "2"),
        ("2.0", ("dd", "44"), "2"),
        ("4A", ("dd", "40"), "4A"),
        (None, ("dd", "21"), ""),
    ],
)
def test_label_truth(cell: str | None, dataset: tuple[str, str], label: str) -> None:
    assert label_truth(cell, ds(*dataset)) == label


@pytest.mark.parametrize(
    ("cell", "dataset_id", "value"),
    [
        ("{'EF': 55.5}", "18", 55.5),
        ("{'IMT': [0.8, 0.9]}", "27", 0.8),
        ("{'IMT': None}", "27", None),
        ("{'abdominal_circumference': '250'}", "50", 250.0),
        ("{'fat value': 12}", "57", 12.0),
        ("[{'fat value': 7}]", "57", 7.0),
        ("{'EF': 55, 'HR': 80}", "57", None),  # no key like 'fat value' among several
        ("{'EF': 55}", "57", 55.0),  # the only key of a one-key dict is the measurement
        ("{'head circumference': 180.5, 'pixel_size_mm': 0.1}", "31", 180.5),  # a space for the underscore
        ("{'Head-Circumference': 180.5}", "31", 180.5),
        ("{'FAT_VALUE': 12}", "57", 12.0),
        ("nan", "18", None),
        (None, "18", None),
    ],
)
def test_measurement_truth(cell: str | None, dataset_id: str, value: float | None) -> None:
    assert measurement_truth(cell, ds("cve", dataset_id)) == value


@pytest.mark.parametrize(
    ("cell", "dataset_id", "reason", "detail"),
    [
        (None, "18", "truth_missing", "measurement is empty"),
        ("{'IMT': None}", "27", "truth_missing", "measurement 'IMT' is null (not measured)"),
        ("{'IMT': [None]}", "27", "truth_missing", "measurement 'IMT' is null (not measured)"),
        ("{'EF': 'n/a'}", "18", "truth_unreadable", "measurement 'EF' is not a number"),
        ("nan", "18", "truth_unreadable", "measurement is not a {name: value} dict"),
        (
            "{'a': 1, 'b': 2}",
            "31",
            "truth_unreadable",
            "measurement has no key like 'head_circumference' (keys: 'a', 'b')",
        ),
    ],
)
def test_unreadable_measurements_say_why(cell: str | None, dataset_id: str, reason: str, detail: str) -> None:
    assert read_measurement(cell, ds("cve", dataset_id)) == Unread(reason, detail)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cell", "dataset_id", "value"),
    [
        ("{'EF': 55.5}", "18", 55.5),
        ("{'EF': [60, 70]}", "18", 60.0),
        ("{'IMT': [0.8, 0.9]}", "27", 0.8),
        ("{'IMT': '0.8'}", "27", 0.0),  # list('0.8')[0] == '0'
        ("{'IMT': 0.8}", "27", None),  # list(0.8) raises: row skipped
        ("{'IMT': None}", "27", None),
        ("[{'anything': 7}]", "57", 7.0),
        ("{'EF': None}", "18", None),  # the official scorer crashes on the file here; we skip the row
    ],
)
def test_reference_measurement_truth(cell: str, dataset_id: str, value: float | None) -> None:
    assert reference_measurement_truth(cell, ds("cve", dataset_id)) == value


# ============================================================== reference: the options of stage (a)


def test_reference_options_other_quirk() -> None:
    assert reference_options("dd", "42")[-1] == "other"  # "...versus other findings"
    assert reference_options("dd", "75")[-1] == "other"  # "otherwise"
    assert "other" not in reference_options("dd", "42", quirks=replace(ReferenceQuirks(), other_option=False))
    assert "other" in reference_options("vra", "anatomy", quirks=ALL_OFF)  # a real label stays
    assert "other" not in reference_options("dd", "21")


def test_reference_options_mentions_and_spaces() -> None:
    assert reference_options("vra", "50") == ("none", "optimal", "suboptimal", "fetal abdomen")
    assert reference_options("vra", "50", quirks=ALL_OFF) == ("none", "optimal", "suboptimal")
    assert reference_options("vra", "18") == ("2CH", " 4CH")
    assert reference_options("vra", "18", quirks=ALL_OFF) == ("2CH", "4CH")
    assert reference_options("dd", "40") == BIRADS
    assert reference_options("dd", "28_1")[0] == "Mild OA"  # the official key '28' is KL grade
    assert len(reference_options("vra", "28")) == 15  # '28_class': 14 views + 'other'
    assert reference_options("dd", "nope") == ()


def test_reference_options_location() -> None:
    assert reference_options("ll", "04") == LOCATION_OPTIONS
    assert reference_options("kd", "48") == LOCATION_OPTIONS
    od = reference_options("od", "09", "kidney", "kidney")
    assert od[0] == "upper left" and od[4] == " center" and od[-1] == " not visible."
    assert reference_options("od", "50", "fetal abdomen", "fetal abdomen")[-1] == "fetal abdomen"
    assert reference_options("od", "09", quirks=ALL_OFF) == LOCATION_OPTIONS


# ==================================================================== reference: the stage (a) matcher


@pytest.mark.parametrize(
    ("answer", "where", "output"),
    [
        ("benign", "dd/21", "benign"),
        ("not malignant; likely benign", "dd/21", "benign"),  # list order, not answer order
        ("The lesion is abnormal", "dd/23", "normal"),  # plain substring, step (iv)
        ("It is consistent with pancreas cancer", "dd/42", " pancreas cancer"),
        ("non-pancreas cancer", "dd/42", "non-pancreas cancer"),
        ("some other finding", "dd/42", "other"),
        ("not visible", "vra/74is_visible", "Visible"),  # the hyphen-less answer hits 'Visible'
        ("Not-visible", "vra/74is_visible", "Not-visible"),
        ("A", "dd/21", ""),
        ("2.", "dd/44", " 2"),
        ("Score 2", "dd/44", " 2"),
        ("**3**", "dd/44", " 3"),
        ("1.0", "dd/57", "0"),  # '0' is tried first and \b0\b matches in '1.0'
        ("API call failed: 500", "dd/44", "0"),
        (REFERENCE_ERROR_TEXT, "dd/57", "0"),
        (REFERENCE_ERROR_TEXT, "dd/40", "5"),
        ("[错误: 模型返回空响应，已重试 3 次]", "dd/44", " 3"),
        ("maternal", "vra/03", "maternal cervix"),  # fetal fallbacks, step (vi)
        ("cervix", "vra/03", "maternal cervix"),
        ("brain", "vra/03", "fetal brain"),
        ("the fetal abdomen", "vra/50", "fetal abdomen"),
        ("", "dd/21", ""),
    ],
)
def test_reference_stage_a(answer: str, where: str, output: str) -> None:
    assert stage_a(answer, *where.split("/")) == output


@pytest.mark.parametrize(
    ("answer", "output"),
    [
        ("not visible", ""),  # the option is 'not visible.': no step matches
        ("Not visible.", " not visible."),
        ("The lesion is not visible.", " not visible."),
        ("lower center", " lower center"),
        ("center", " center"),
    ],
)
def test_reference_stage_a_on_od(answer: str, output: str) -> None:
    assert stage_a(answer, "od", "09", anatomy="kidney", channel="kidney") == output
    no_period = reference_options("od", "09", quirks=replace(ReferenceQuirks(), od_period_option=False))
    assert reference_stage_a_option("not visible", no_period).output.strip() == "not visible"


@pytest.mark.parametrize(
    ("answer", "output", "skips"),
    [(2, "", True), (float("nan"), "", True), (0, "", False), (None, "", False), ([], "", False)],
)
def test_reference_stage_a_json_values(answer: object, output: str, skips: bool) -> None:
    result = reference_stage_a_option(answer, reference_options("dd", "44"))
    assert (result.output, result.skips_dataset) == (output, skips)
    assert reference_stage_a_option(None, ()).skips_dataset  # no options: stage (b) cannot strip None
    assert reference_stage_a_option("raw", ()).output == "raw"


# ============================================================= reference: classification stage (b)


@pytest.mark.parametrize(
    ("stage_a_output", "cell", "dataset", "verdict"),
    [
        (" malignant", "Malignant", ("dd", "21"), ("malignant", "malignant", True, True)),
        ("", "benign", ("dd", "21"), ("", "benign", True, False)),  # unmatched counts wrong
        (" 2", "2", ("dd", "44"), ("2", "2", True, True)),
        ("", "2", ("dd", "44"), ("", "2", False, False)),  # int truth: int('') fails -> dropped
        ("0", "1", ("dd", "57"), ("0", "1", True, False)),
        ("fetal", "{'Anatomy': 'Fetal'}", ("vra", "anatomy"), ("fetal", "fetal", True, True)),
        ("thyroid", "Thyroid", ("vra", "anatomy"), ("thyroid", "thyroid", True, True)),
        ("None", "None", ("vra", "53"), ("None", "nan", True, False)),  # pandas reads 'None' as NaN
        ("benign", "['benign']", ("dd", "21"), ("benign", "benign", True, True)),
        ("'4A'", "4A", ("dd", "40"), ("4a", "4a", True, True)),
    ],
)
def test_reference_classification(
    stage_a_output: str, cell: str, dataset: tuple[str, str], verdict: tuple[object, ...]
) -> None:
    v = reference_classification(stage_a_output, cell, ds(*dataset))
    assert (v.prediction, v.truth, v.counted, v.correct) == verdict


def test_reference_classification_quirks_off() -> None:
    dropped = reference_classification("", "2", ds("dd", "44"), replace(ReferenceQuirks(), int_label_drop=False))
    assert (dropped.counted, dropped.correct) == (True, False)
    v = reference_classification("None", "None", ds("vra", "53"), replace(ReferenceQuirks(), pandas_na_truth=False))
    assert v.correct is True
    assert reference_label_truth(None, ds("dd", "21")) is None
    assert reference_label_truth("3", ds("dd", "44")) == 3


# ================================================================== reference: location stage (b)


@pytest.mark.parametrize(
    ("stage_a_output", "prediction"),
    [
        (" lower center", "center"),  # 'center' is tested before 'lower center'
        ("lower right, near the center", "center"),  # any 'center' wins over the later keywords
        ("upper center", "upper center"),  # an earlier keyword wins
        (" not visible.", "not visible"),
        ("middle and center", "center"),  # fallback pairs
        ("central", "center"),
        ("fetal abdomen", "fetal abdomen"),  # no keyword: wrong against any truth
        ("", ""),
    ],
)
def test_reference_location_prediction(stage_a_output: str, prediction: str) -> None:
    assert reference_location_prediction(stage_a_output) == prediction


def test_reference_location_center_quirk_off() -> None:
    assert reference_location_prediction(" lower center", replace(ReferenceQuirks(), center_keyword_first=False)) == (
        "lower center"
    )


# ========================================================================== reference: numbers (CVE)


@pytest.mark.parametrize(
    ("answer", "dataset_id", "value"),
    [
        ("about 12.5%", "57", 5.0),  # 57 reads integers only; '(\d+)%' matches '5%'
        ("5.5 cm", "57", 5.0),
        ("12.5", "57", 12.5),  # a plain number passes unchanged
        ("40-45%", "18", 45.0),  # the first number followed by a unit
        ("5.5 cm", "18", 5.5),
        ("0.55", "18", 0.55),
        ("-5", "18", 5.0),  # no minus sign
        ("EF around 55 given the walls", "18", 55.0),  # '55 g' counts as a unit match
        ("IMT of 0.9", "50", 0.9),
        ("250 mm", "50", 250.0),
        (REFERENCE_ERROR_TEXT, "18", 500.0),  # error text with digits is a number
        (REFERENCE_ERROR_TEXT, "57", 500.0),
        ("null", "27", None),
        ("not measurable", "27", None),
        ("", "18", None),
        (None, "18", None),
    ],
)
def test_reference_number(answer: str | None, dataset_id: str, value: float | None) -> None:
    assert reference_number(answer, dataset_id) == value


def test_reference_stage_a_number_keeps_text() -> None:
    assert reference_stage_a_number(" 12.50 ", "18") == "12.50"
    assert reference_stage_a_number("no digits", "18") == "null"


# The number patterns of the official kit, as written there (ambiguous; cubic on long digit runs).
_OFFICIAL_NUMBER_PATTERNS = {
    "generic": (
        r"(\d+\.?\d*)\s*(?:mm|cm|ml|g|kg|%)",
        r"(?:value|measurement|result|reading) (?:of |is |approximately |about |around |)(\d+\.?\d*)",
        r"(\d+\.\d+)",
        r"(\d+)",
    ),
    "57": (*(rf"{p} (\d+)" for p in ("around", "value of", "value around", "indicative of")), r"(\d+)%", r"(\d+)"),
    "50": (
        r"imt (?:of |is |value |measurement |measures |approximately |about |around |)(\d+\.?\d*)",
        r"(\d+\.?\d*)\s*(?:mm|millimeters|millimeter)",
        r"(\d+\.?\d*)",
    ),
}


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="0123456789.. mcg%klaroundvieimt", max_size=30))
def test_the_number_patterns_find_what_the_official_ones_find(text: str) -> None:
    """Rewritten for linear time; the first match of each must equal the official pattern's."""
    import re

    from u2eval.scoring.official import _GENERIC_NUMBER_PATTERNS, _NUMBER_PATTERNS

    ours_by_source = {"generic": _GENERIC_NUMBER_PATTERNS, **_NUMBER_PATTERNS}
    for source, officials in _OFFICIAL_NUMBER_PATTERNS.items():
        for official in officials:
            ours = next(
                p
                for p in ours_by_source[source]
                if p.replace("(?<!\\d)", "").replace("(?:\\.\\d*)?", "\\.?\\d*") == official
            )
            found, expected = re.search(ours, text), re.search(official, text)
            assert (found.group(1) if found else None) == (expected.group(1) if expected else None), (official, text)


def test_a_runaway_number_is_read_in_linear_time() -> None:
    import time

    started = time.perf_counter()
    for dataset_id in ("18", "27", "50", "57"):
        for answer in ("\udfff" + "1" * 20_000, "1" * 20_000 + ".", "1" * 20_000 + "x", "1." * 10_000):
            reference_stage_a_number(answer, dataset_id)
    # The official patterns take hours on 20,000 digits; no load stretches these milliseconds to 30 s (a guard,
    # not a speed claim).
    assert time.perf_counter() - started < 30.0
