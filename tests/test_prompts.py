"""Prompts: a golden snapshot per dataset of every task, and the properties every prompt must keep.

Regenerate the snapshots after a deliberate wording change with
``U2EVAL_UPDATE_GOLDEN=1 pytest tests/test_prompts.py`` and review the diff.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
from pathlib import Path
from types import MappingProxyType

import jinja2
import pytest
from PIL import Image

from u2eval.benchmark.prompts import (
    DATASET_TEMPLATE,
    DEFAULT_OPTIONS,
    PromptLibrary,
    PromptOptions,
    render,
    template_hashes,
    validate_templates,
)
from u2eval.benchmark.sectors import LOCATION_OPTIONS
from u2eval.benchmark.tasks import DatasetSpec, TaskSpec, TemplateNames, all_tasks, get_task
from u2eval.errors import ConfigError, DataError
from u2eval.records import Case, ImagePart, TextPart
from u2eval.resources import resource_dir

GOLDEN_DIR = Path(__file__).parent / "golden" / "prompts"
UPDATE_GOLDEN = os.environ.get("U2EVAL_UPDATE_GOLDEN") == "1"

ALL = [(task, dataset) for task in all_tasks() for dataset in task.datasets]
ALL_IDS = [f"{task.key}_{dataset.id}" for task, dataset in ALL]
VARIANTS = [
    PromptOptions(),
    PromptOptions(anatomy=False),
    PromptOptions(role=False),
    PromptOptions(format="brief"),
    PromptOptions(anatomy=False, role=False, format="brief"),
]


def _of(capability: str) -> list[tuple[TaskSpec, DatasetSpec]]:
    return [(t, d) for t, d in ALL if t.capability == capability]


@pytest.fixture(scope="module")
def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (4, 3), color=128).save(buffer, format="PNG")
    return buffer.getvalue()


def make_case(
    task: TaskSpec,
    dataset: DatasetSpec,
    image: bytes = b"\x89PNG\r\n\x1a\n",
    *,
    anatomy: str | None = None,
    scenario: str | None = None,
    columns: dict[str, str | None] | None = None,
    image_format: str = "png",
) -> Case:
    """A hand-built row of a dataset, as the data layer would produce it."""
    if columns is None and dataset.id == "31" and task.key == "cve":
        columns = {"measurement": "{'head_circumference': 181.2, 'pixel_size_mm': 0.154}"}
    return Case(
        case_id=f"{task.folder}/{dataset.id}.tsv#0",
        task=task.key,
        dataset_id=dataset.id,
        dataset_name=dataset.source,
        source_file=f"{dataset.id}.tsv",
        row_index=0,
        anatomy=dataset.anatomy if anatomy is None else anatomy,
        scenario=(dataset.channel or dataset.keypoint or "") if scenario is None else scenario,
        truth=None,
        options=dataset.labels,
        image=image,
        image_format=image_format,
        columns=MappingProxyType(columns or {}),
    )


def text_of(case: Case, task: TaskSpec, options: PromptOptions = DEFAULT_OPTIONS) -> str:
    parts = render(case, task, options).parts
    assert isinstance(parts[1], TextPart)
    return parts[1].text


def official_options(text: str) -> list[str]:
    """The option list as the official stage-(a) extractor reads it: the quoted strings after 'options:',
    or, with at most one of them, the rest of that line split on commas."""
    lower = text.lower()
    assert lower.count("options:") == 1, "exactly one options line"
    after = text[lower.index("options:") + len("options:") :]
    quoted = re.findall(r"'([^']*)'", after)
    if len(quoted) > 1:
        return quoted
    return [item.strip() for item in after.splitlines()[0].split(",")]


# -- golden snapshots ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("task", "dataset"), ALL, ids=ALL_IDS)
def test_golden_snapshot(task: TaskSpec, dataset: DatasetSpec, png: bytes) -> None:
    text = text_of(make_case(task, dataset, png), task)
    path = GOLDEN_DIR / f"{task.key}_{dataset.id}.txt"
    if UPDATE_GOLDEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
    assert path.is_file(), f"missing golden {path.name}: run U2EVAL_UPDATE_GOLDEN=1 pytest {__file__}"
    assert text + "\n" == path.read_text(encoding="utf-8")


def test_no_stale_goldens() -> None:
    on_disk = {p.stem for p in GOLDEN_DIR.glob("*.txt")}
    assert on_disk == set(ALL_IDS)


# -- message layout -----------------------------------------------------------------------------------


def test_image_part_first_with_exact_bytes(png: bytes) -> None:
    task = get_task("dd")
    prompt = render(make_case(task, task.datasets[0], png), task)
    assert prompt.system is None
    assert len(prompt.parts) == 2
    image, text = prompt.parts
    assert isinstance(image, ImagePart) and isinstance(text, TextPart)
    assert image.data == png and image.media_type == "image/png"
    assert prompt.text == text.text and text.text
    assert prompt.case_id == "disease_diagnosis/21.tsv#0"
    assert prompt.template == "dd:ours"


@pytest.mark.parametrize(
    ("fmt", "media"), [("jpeg", "image/jpeg"), ("JPG", "image/jpeg"), ("image/webp", "image/webp")]
)
def test_media_type_from_image_format(fmt: str, media: str) -> None:
    task = get_task("ll")
    image = render(make_case(task, task.datasets[0], b"\xff\xd8\xff", image_format=fmt), task).parts[0]
    assert isinstance(image, ImagePart) and image.media_type == media and image.data == b"\xff\xd8\xff"


def test_unknown_image_format_is_a_data_error() -> None:
    task = get_task("ll")
    with pytest.raises(DataError, match="image format"):
        render(make_case(task, task.datasets[0], image_format="dicom"), task)


def test_parts_are_joined_by_blank_lines_and_role_comes_first() -> None:
    task = get_task("vra")
    paragraphs = text_of(make_case(task, task.dataset("18")), task).split("\n\n")
    assert len(paragraphs) == 3
    assert paragraphs[0].startswith("You are a radiologist") and "heart" in paragraphs[0]
    assert paragraphs[1].startswith("The image is an apical")
    assert paragraphs[2].startswith("Answer with exactly one option")


# -- answer forms the scorer expects ------------------------------------------------------------------


@pytest.mark.parametrize("options", VARIANTS, ids=lambda o: o.name)
@pytest.mark.parametrize(("task", "dataset"), _of("classification"), ids=lambda x: getattr(x, "key", None) or x.id)
def test_classification_lists_every_label_verbatim(
    task: TaskSpec, dataset: DatasetSpec, options: PromptOptions
) -> None:
    text = text_of(make_case(task, dataset), task, options)
    assert official_options(text) == list(dataset.labels)
    option_line = next(line for line in text.splitlines() if line.startswith("Options: "))
    if dataset.int_labels:
        assert option_line == "Options: " + ", ".join(dataset.labels)
    else:
        assert option_line == "Options: " + ", ".join(f"'{label}'" for label in dataset.labels)
    assert not re.search(r"\b[A-F]\)|\([a-f]\)", text), "options are label text, never letters"


@pytest.mark.parametrize(("task", "dataset"), _of("classification"), ids=lambda x: getattr(x, "key", None) or x.id)
def test_classification_format_asks_for_label_text_or_integer(task: TaskSpec, dataset: DatasetSpec) -> None:
    answer_form = text_of(make_case(task, dataset), task).split("\n\n")[-1]
    if dataset.int_labels:  # 44 and 57: the scorer int()s the answer
        assert "single integer" in answer_form
    else:
        assert "exactly as it appears" in answer_form and "without the quotation marks" in answer_form


@pytest.mark.parametrize("options", VARIANTS, ids=lambda o: o.name)
@pytest.mark.parametrize(("task", "dataset"), _of("detection"), ids=lambda x: getattr(x, "key", None) or x.id)
def test_detection_lists_the_ten_location_phrases(task: TaskSpec, dataset: DatasetSpec, options: PromptOptions) -> None:
    text = text_of(make_case(task, dataset), task, options)
    assert official_options(text) == list(LOCATION_OPTIONS)
    for phrase in LOCATION_OPTIONS:
        assert f"'{phrase}'" in text


@pytest.mark.parametrize("options", VARIANTS, ids=lambda o: o.name)
@pytest.mark.parametrize(("task", "dataset"), _of("regression"), ids=lambda x: getattr(x, "key", None) or x.id)
def test_cve_states_quantity_unit_and_range(task: TaskSpec, dataset: DatasetSpec, options: PromptOptions) -> None:
    text = text_of(make_case(task, dataset), task, options)
    assert dataset.value_range is not None
    low, high = (str(int(v)) if dataset.integer_value else str(v) for v in dataset.value_range)
    unit = {"%": " percent", "": ""}.get(dataset.unit or "", f" {dataset.unit}")
    assert f"between {low} and {high}{unit}, inclusive" in text
    assert ("null" in text) == dataset.nullable
    if options.anatomy:
        assert f"Estimate the {dataset.quantity} from this image" in text
    answer_form = text.split("\n\n")[-1]
    assert "number" in answer_form
    if options.format == "default":
        assert "unit" in answer_form
        assert ("whole number" in answer_form) == dataset.integer_value


def test_cve_31_gives_the_pixel_size_only_when_the_cell_has_one() -> None:
    task = get_task("cve")
    hc = task.dataset("31")
    with_size = text_of(
        make_case(task, hc, columns={"measurement": "{'head_circumference': 181.2, 'pixel_size_mm': 0.154}"}), task
    )
    assert "One image pixel corresponds to 0.154 mm." in with_size
    assert "181.2" not in with_size  # the measurement cell also holds the truth
    json_cell = text_of(make_case(task, hc, columns={"measurement": '{"pixel_size_mm": "0.0691", "x": null}'}), task)
    assert "0.0691 mm" in json_cell
    for cell in (
        None,
        "{'head_circumference': 181.2}",
        "{'pixel_size_mm': -1}",
        "{'pixel_size_mm': 'n/a'}",
        "pixel_size_mm: [",
        "{'pixel_size_mm': True}",
    ):
        text = text_of(make_case(task, hc, columns={"measurement": cell}), task)
        assert "pixel" not in text, cell


def test_generation_formats() -> None:
    rg, cg = get_task("rg"), get_task("cg")
    report = text_of(make_case(rg, rg.datasets[0]), rg).split("\n\n")[-1]
    assert "report text alone" in report and "markdown" in report
    for dataset in cg.datasets:
        caption = text_of(make_case(cg, dataset), cg)
        assert "one-sentence caption" in caption
        assert 'without a prefix such as "Caption:"' in caption


# -- what the templates may and may not see -----------------------------------------------------------


def _without(text: str, phrases: list[str]) -> str:
    for phrase in sorted(phrases, key=len, reverse=True):
        text = text.replace(phrase, " ")
    return text


@pytest.mark.parametrize("role", [True, False])
@pytest.mark.parametrize(("task", "dataset"), ALL, ids=ALL_IDS)
def test_anatomy_false_names_no_anatomy(task: TaskSpec, dataset: DatasetSpec, role: bool) -> None:
    case = make_case(task, dataset)
    named = text_of(case, task, PromptOptions(role=role))
    hidden = text_of(case, task, PromptOptions(anatomy=False, role=role))
    # The answer labels and the structure to locate are the task itself; everything else must not say it.
    rest = _without(hidden, [*dataset.labels, case.scenario] if case.scenario else list(dataset.labels))
    for phrase in dataset.anatomy.split(" and "):
        assert not re.search(rf"\b{re.escape(phrase)}\b", rest, re.IGNORECASE), phrase
    if dataset.anatomy == "mixed":  # nothing to name: the organ is the answer
        assert named == hidden
    else:
        assert dataset.anatomy.split(" and ")[0] in _without(named, list(dataset.labels))
        if role or dataset.anatomy != case.scenario:  # OD on its own organ: only the role names it
            assert named != hidden


def test_detection_and_generation_name_the_row_anatomy() -> None:
    ll, rg = get_task("ll"), get_task("rg")
    assert "the main lesion in the left breast" in text_of(make_case(ll, ll.dataset("23"), anatomy="left breast"), ll)
    assert "image of the upper abdomen" in text_of(make_case(rg, rg.datasets[0], anatomy="upper abdomen"), rg)
    # An empty anatomy_location falls back to the task file's anatomy.
    assert "in the breast" in text_of(make_case(ll, ll.dataset("23"), anatomy=""), ll)


def test_classification_never_names_the_row_anatomy() -> None:
    """A row's anatomy_location can be the answer (the mixed-anatomy set): it must not reach the prompt."""
    vra = get_task("vra")
    text = text_of(make_case(vra, vra.dataset("anatomy"), anatomy="thyroid"), vra)
    assert "thyroid" not in _without(text, ["'thyroid'"])
    assert "reading a single ultrasound image." in text
    planes = text_of(make_case(vra, vra.dataset("03"), anatomy="fetal brain"), vra)
    assert "fetal brain" not in _without(planes, ["'fetal brain'"])


def test_regression_prompt_does_not_leak_the_measurement() -> None:
    cve = get_task("cve")
    text = text_of(make_case(cve, cve.dataset("18"), columns={"measurement": "{'EF': 63.7}"}), cve)
    assert "63.7" not in text and "63" not in text


def test_od_and_kd_locate_the_row_scenario() -> None:
    od, kd = get_task("od"), get_task("kd")
    assert "find the right kidney and" in text_of(make_case(od, od.dataset("09"), scenario="right kidney"), od)
    assert "If the right kidney cannot be seen" in text_of(make_case(od, od.dataset("09"), scenario="right kidney"), od)
    assert "find the apex (a single" in text_of(make_case(kd, kd.dataset("48"), scenario=" apex "), kd)
    # No scenario: the task file's channel / keypoint.
    assert "find the gallbladder and" in text_of(make_case(od, od.dataset("13"), scenario=""), od)
    assert "find the mitral valve annulus (" in text_of(make_case(kd, kd.dataset("48"), scenario=""), kd)
    bare = od.model_copy(update={"datasets": (od.dataset("13").model_copy(update={"channel": None}),)})
    with pytest.raises(DataError, match="no structure name"):
        render(make_case(bare, bare.datasets[0], scenario=""), bare)


def test_case_that_does_not_belong_to_the_task_is_a_data_error() -> None:
    dd, vra = get_task("dd"), get_task("vra")
    with pytest.raises(DataError, match="not part of task dd"):
        render(make_case(dd, vra.dataset("03")), dd)
    with pytest.raises(DataError, match="cannot be rendered with task vra"):
        render(make_case(dd, dd.datasets[0]), vra)


@pytest.mark.parametrize(("task", "dataset"), ALL, ids=ALL_IDS)
def test_prose_avoids_words_the_official_option_extractor_turns_into_options(
    task: TaskSpec, dataset: DatasetSpec
) -> None:
    for options in VARIANTS:
        text = _without(text_of(make_case(task, dataset), task, options), list(dataset.labels)).lower()
        assert "other" not in _without(text, ["'other'"]) or "other" in dataset.labels
        assert ("bi-rads" in text) == (dataset.id == "40" and task.key == "dd")


# -- role, variants, options --------------------------------------------------------------------------


@pytest.mark.parametrize(("task", "dataset"), ALL, ids=ALL_IDS)
def test_role_false_removes_exactly_the_role_sentence(task: TaskSpec, dataset: DatasetSpec) -> None:
    case = make_case(task, dataset)
    with_role = text_of(case, task)
    without = text_of(case, task, PromptOptions(role=False))
    role, rest = with_role.split("\n\n", 1)
    assert role.startswith("You are a radiologist")
    assert without == rest
    assert "You are" not in without


def test_brief_format_replaces_only_the_format_part() -> None:
    for task, dataset in ALL:
        case = make_case(task, dataset)
        default = text_of(case, task).split("\n\n")
        brief = text_of(case, task, PromptOptions(format="brief")).split("\n\n")
        assert default[:-1] == brief[:-1]
        assert len(brief[-1]) < len(default[-1])


def test_option_names_and_validation() -> None:
    assert PromptOptions().name == "ours"
    assert PromptOptions(anatomy=False).name == "ours-noanatomy"
    assert PromptOptions(role=False, format="brief").name == "ours-norole-brief"
    assert PromptOptions(anatomy=False, role=False, format="brief").name == "ours-noanatomy-norole-brief"
    assert PromptOptions(source="dataset").name == "dataset"
    for bad in ("Brief", "brief-2", "", "norole", "../x"):
        with pytest.raises(ConfigError):
            PromptOptions(format=bad)
    with pytest.raises(ConfigError, match="no variants"):
        PromptOptions(source="dataset", anatomy=False)
    with pytest.raises(ConfigError):
        PromptOptions(source="hub")  # type: ignore[arg-type]


def test_unknown_format_variant_fails_validation_naming_the_file() -> None:
    with pytest.raises(ConfigError, match=r"classification/format\.terse\.j2"):
        validate_templates(all_tasks(), PromptOptions(format="terse"))


# -- the dataset's own prompt column ------------------------------------------------------------------


def test_dataset_source_normalises_and_fills_only_the_anatomy() -> None:
    task = get_task("ll")
    raw = 'You read an image of the {anatomy\\_location}.\\n\\nSay {"where": 1} or {other} or {0}, not {anatomy}.'
    case = make_case(task, task.dataset("23"), anatomy="breast", columns={"prompt": raw})
    prompt = render(case, task, PromptOptions(source="dataset"))
    expected = 'You read an image of the breast.\n\nSay {"where": 1} or {other} or {0}, not {anatomy}.'
    assert prompt.text == expected
    assert prompt.template == DATASET_TEMPLATE
    template = expected.replace("breast.", "{anatomy_location}.", 1)
    assert prompt.template_sha256 == hashlib.sha256(template.encode()).hexdigest()
    assert isinstance(prompt.parts[0], ImagePart) and prompt.system is None
    # The hash fingerprints the template, not the row: another organ, same hash.
    other_row = make_case(task, task.dataset("23"), anatomy="thyroid", columns={"prompt": raw})
    assert render(other_row, task, PromptOptions(source="dataset")).template_sha256 == prompt.template_sha256


@pytest.mark.parametrize("cell", [None, "", "  \\n  "])
def test_dataset_source_without_prompt_is_a_data_error(cell: str | None) -> None:
    task = get_task("dd")
    case = make_case(task, task.datasets[0], columns={"prompt": cell})
    with pytest.raises(DataError) as error:
        render(case, task, PromptOptions(source="dataset"))
    assert error.value.where == case.case_id and error.value.reason == "no prompt column"


def test_dataset_source_hashes_and_validation() -> None:
    options = PromptOptions(source="dataset")
    assert template_hashes(all_tasks(), options) == {t.key: DATASET_TEMPLATE for t in all_tasks()}
    validate_templates(all_tasks(), options)  # nothing to check before the data is read


# -- fingerprints -------------------------------------------------------------------------------------


@pytest.fixture()
def prompts_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(resource_dir("prompts"), tmp_path / "prompts"))


def test_template_hashes_cover_every_task_and_depend_on_the_parts_used() -> None:
    ours = template_hashes(all_tasks(), PromptOptions())
    assert list(ours) == ["dd", "vra", "ll", "od", "kd", "cve", "rg", "cg"]
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in ours.values())
    assert ours["dd"] == ours["vra"]  # the same three files and the same scenario file
    assert len(set(ours.values())) == 7
    no_role = template_hashes(all_tasks(), PromptOptions(role=False))
    assert all(no_role[k] != ours[k] for k in ours)
    assert template_hashes(all_tasks(), PromptOptions(anatomy=False)) == ours  # same files, other values
    task = get_task("od")
    assert render(make_case(task, task.datasets[0]), task).template_sha256 == ours["od"]


def test_template_sha_changes_when_a_used_file_changes(prompts_copy: Path) -> None:
    tasks = all_tasks()
    before = PromptLibrary(prompts_copy).template_hashes(tasks, PromptOptions())
    assert before == template_hashes(tasks, PromptOptions()), "the hash must not depend on the folder path"

    scenarios = prompts_copy / "classification" / "scenarios.j2"
    scenarios.write_text(scenarios.read_text(encoding="utf-8") + "\n{# edited #}\n", encoding="utf-8")
    after = PromptLibrary(prompts_copy).template_hashes(tasks, PromptOptions())
    assert after["dd"] != before["dd"] and after["vra"] != before["vra"]
    assert {k: v for k, v in after.items() if k not in ("dd", "vra")} == {
        k: v for k, v in before.items() if k not in ("dd", "vra")
    }

    (prompts_copy / "_macros.j2").write_text(
        (prompts_copy / "_macros.j2").read_text(encoding="utf-8") + " ", encoding="utf-8"
    )
    changed = PromptLibrary(prompts_copy).template_hashes(tasks, PromptOptions())
    assert all(changed[k] != after[k] for k in after)

    unused = prompts_copy / "generation" / "unused.j2"
    unused.write_text("{{ nothing }}", encoding="utf-8")
    assert PromptLibrary(prompts_copy).template_hashes(tasks, PromptOptions()) == changed


# -- strictness and early failure ---------------------------------------------------------------------


def _mini(root: Path, **files: str) -> PromptLibrary:
    for name, body in files.items():
        path = root / name.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body, encoding="utf-8")
    return PromptLibrary(root)


def _with_templates(
    task: TaskSpec, role: str = "role.j2", instruction: str = "instr.j2", fmt: str = "fmt.j2"
) -> TaskSpec:
    return task.model_copy(update={"templates": TemplateNames(role=role, instruction=instruction, format=fmt)})


def test_strict_undefined_catches_a_missing_variable(tmp_path: Path) -> None:
    library = _mini(tmp_path, **{"role.j2": "Role.", "instr.j2": "{{ dataset.id }} {{ no_such_name }}", "fmt.j2": "F."})
    task = _with_templates(get_task("dd"))
    with pytest.raises(ConfigError, match=r"instr\.j2.*no_such_name"):
        library.validate([task], PromptOptions())
    with pytest.raises(ConfigError, match="instr.j2"):
        library.render(make_case(task, task.datasets[0]), task)


def test_strict_undefined_catches_a_missing_attribute_and_scenario(prompts_copy: Path) -> None:
    library = _mini(
        prompts_copy.parent / "mini", **{"role.j2": "R.", "instr.j2": "{{ dataset.colour }}", "fmt.j2": "F."}
    )
    with pytest.raises(ConfigError, match="colour"):
        library.validate([_with_templates(get_task("ll"))], PromptOptions())
    # A dataset added to a task file without its scenario macro stops the run before any model call.
    dd = get_task("dd")
    extra = dd.datasets[0].model_copy(update={"id": "99"})
    grown = dd.model_copy(update={"datasets": (*dd.datasets, extra)})
    with pytest.raises(ConfigError, match=r"classification/instruction\.j2.*d_99"):
        PromptLibrary(prompts_copy).validate([grown], PromptOptions())


def test_missing_template_and_syntax_error_and_computed_include(tmp_path: Path) -> None:
    library = _mini(
        tmp_path,
        **{
            "role.j2": "R.",
            "instr.j2": "{% include 'gone.j2' %}",
            "fmt.j2": "F.",
            "broken.j2": "{% if %}",
            "dynamic.j2": "{% include dataset.id ~ '.j2' %}",
        },
    )
    task = get_task("dd")
    with pytest.raises(ConfigError, match="gone.j2"):
        library.validate([_with_templates(task)], PromptOptions())
    with pytest.raises(ConfigError, match=r"broken\.j2', line 1"):
        library.validate([_with_templates(task, instruction="broken.j2")], PromptOptions())
    with pytest.raises(ConfigError, match="computed template name"):
        library.validate([_with_templates(task, instruction="dynamic.j2")], PromptOptions())
    with pytest.raises(ConfigError, match="not found"):
        PromptLibrary(tmp_path / "nowhere")


def test_shipped_templates_validate_for_every_variant() -> None:
    for options in VARIANTS:
        validate_templates(all_tasks(), options)


# -- speed: compiled once, no file access per render --------------------------------------------------


def test_no_file_is_read_after_the_first_render_of_a_task(monkeypatch: pytest.MonkeyPatch) -> None:
    library = PromptLibrary(resource_dir("prompts"))
    for task in all_tasks():
        library.render(make_case(task, task.datasets[0]), task)

    def no_reads(*args: object, **kwargs: object) -> None:
        raise AssertionError("a template file was read during a render")

    monkeypatch.setattr(jinja2.FileSystemLoader, "get_source", no_reads)
    for task, dataset in ALL:  # every other dataset and variant-free render reuses the compiled plan
        library.render(make_case(task, dataset), task)
