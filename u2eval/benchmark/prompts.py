"""Render a Case into a provider-neutral Prompt: the image first, then one text part, no system prompt.

Two prompt sources. ``ours``: the jinja2 templates in ``prompts/``, three parts per task (role, instruction,
format; the task file names them) joined by blank lines, with variants for ablations (anatomy named or not,
role on or off, format variants as ``<format stem>.<variant>.j2`` files). ``dataset``: the row's own
``prompt`` column, cleaned of the dataset viewer's escapes, with ``{anatomy_location}`` filled in.

One strict Environment per template folder, built lazily once: every file is read and compiled once per
process, so a render touches no file. Each prompt carries the sha256 of the template files behind it
(found statically through their includes and imports), which the run manifest records.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import jinja2
from jinja2 import meta

from u2eval.benchmark.tasks import DatasetSpec, TaskSpec, tasks_dir
from u2eval.benchmark.template_values import case_dataset, template_values
from u2eval.errors import ConfigError, DataError
from u2eval.records import Case, ImagePart, Prompt, TextPart
from u2eval.resources import resource_dir

__all__ = [
    "DATASET_TEMPLATE",
    "DEFAULT_OPTIONS",
    "PromptLibrary",
    "PromptOptions",
    "default_library",
    "render",
    "template_hashes",
    "validate_templates",
]

PromptSource = Literal["ours", "dataset"]

# Template identity of the dataset source; also its entry in template_hashes (the per-case hash is on
# each Prompt, since every row carries its own prompt text).
DATASET_TEMPLATE = "dataset:prompt-column"

# A format variant is part of a file name and of the variant name, which joins its pieces with "-".
_FORMAT_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_RESERVED_FORMATS = frozenset({"noanatomy", "norole"})

_MEDIA_TYPES = MappingProxyType(
    {
        "png": "image/png",
        "jpeg": "image/jpeg",
        "jpg": "image/jpeg",
        "gif": "image/gif",
        "webp": "image/webp",
        "bmp": "image/bmp",
        "tif": "image/tiff",
        "tiff": "image/tiff",
    }
)


@dataclass(frozen=True)
class PromptOptions:
    """Which prompt a run sends. Every field but ``source`` is an ablation knob of our templates."""

    source: PromptSource = "ours"
    anatomy: bool = True  # name the organ / region; False removes it from every part
    role: bool = True  # include the role part
    format: str = "default"  # format-part variant: "default" or the <variant> of <stem>.<variant>.j2 files

    def __post_init__(self) -> None:
        if self.source not in ("ours", "dataset"):
            raise ConfigError(f"prompt source must be 'ours' or 'dataset', not {self.source!r}")
        if not _FORMAT_NAME.match(self.format) or self.format in _RESERVED_FORMATS:
            raise ConfigError(f"invalid prompt format variant {self.format!r} (lower-case letters, digits, _)")
        if self.source == "dataset" and (not self.anatomy or not self.role or self.format != "default"):
            # The dataset's prompts hard-code organ and wording: ignoring a knob would mislabel the run.
            raise ConfigError("the dataset's own prompts have no variants: anatomy, role and format need source 'ours'")

    @property
    def name(self) -> str:
        """Stable short name of the variant, e.g. 'ours', 'ours-noanatomy', 'ours-norole-brief', 'dataset'."""
        if self.source == "dataset":
            return "dataset"
        pieces = ["ours"]
        if not self.anatomy:
            pieces.append("noanatomy")
        if not self.role:
            pieces.append("norole")
        if self.format != "default":
            pieces.append(self.format)
        return "-".join(pieces)


DEFAULT_OPTIONS = PromptOptions()


@dataclass(frozen=True)
class _Plan:
    """Everything about a (task, options) pair that does not depend on the case: computed once."""

    parts: tuple[tuple[str, jinja2.Template], ...]
    sections: tuple[str, ...]  # what each part is: role, instruction, format
    identity: str
    sha256: str


class _CachingLoader(jinja2.BaseLoader):
    """Reads each template file once. The sources it keeps are also what the fingerprints hash."""

    def __init__(self, roots: Sequence[Path]) -> None:
        self._files = jinja2.FileSystemLoader(list(roots), encoding="utf-8")
        self.sources: dict[str, tuple[str, str | None]] = {}

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        if template not in self.sources:
            text, path, _ = self._files.get_source(environment, template)
            self.sources[template] = (text, path)
        source, filename = self.sources[template]
        return source, filename, _always_fresh


def _always_fresh() -> bool:
    return True


class PromptLibrary:
    """The templates of one folder: a strict jinja2 Environment, compiled plans, and their fingerprints.

    The process uses one, over the shipped ``prompts/`` folder (``default_library``); tests build their own
    over a temporary folder. ``extra`` folders are searched first (a task folder's own templates).
    """

    def __init__(self, root: Path, extra: Sequence[Path] = ()) -> None:
        self.root = Path(root)
        for folder in (*extra, self.root):
            if not Path(folder).is_dir():
                raise ConfigError(f"prompt template folder not found: {folder}")
        self._loader = _CachingLoader([*map(Path, extra), self.root])
        self._env = jinja2.Environment(
            loader=self._loader,
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,  # no stat() per render: a run uses the templates it started with
            cache_size=-1,
        )
        # Templates see only the names template_values() gives. Jinja's default globals (range, dict, lipsum, ...)
        # are unused, and merging them into each render's context costs about 40% of a render.
        self._env.globals.clear()
        self._plans: dict[tuple[str, str, str, str, PromptOptions], _Plan] = {}

    # -- public ---------------------------------------------------------------------------------------

    def render(self, case: Case, task: TaskSpec, options: PromptOptions = DEFAULT_OPTIONS) -> Prompt:
        """The prompt for one case. DataError for a row that cannot be rendered (the run skips it),
        ConfigError for a broken template (the run stops)."""
        if case.task != task.key:
            raise DataError(case.case_id, f"a {case.task} case cannot be rendered with task {task.key}")
        image = ImagePart(case.image, _media_type(case), sha256=case.image_digest, b64=case.image_b64)
        if options.source == "dataset":
            template = _dataset_template(case)
            text = template.replace("{anatomy_location}", case.anatomy)
            return Prompt(
                case_id=case.case_id,
                system=None,
                parts=(image, TextPart(text)),
                template=DATASET_TEMPLATE,
                template_sha256=hashlib.sha256(template.encode("utf-8")).hexdigest(),
                sections=(("dataset", text),),
            )
        plan = self._plan(task, options)
        context = template_values(case, task, case_dataset(case, task), options.anatomy)
        sections: list[tuple[str, str]] = []
        for (name, compiled), section in zip(plan.parts, plan.sections, strict=True):
            try:
                text = compiled.render(context).strip()
            except (jinja2.TemplateError, TypeError) as exc:  # TypeError: a macro called with other arguments
                raise ConfigError(f"prompt template {name!r} failed for {case.case_id}: {exc}") from exc
            if text:
                sections.append((section, text))
        return Prompt(
            case_id=case.case_id,
            system=None,
            parts=(image, TextPart("\n\n".join(text for _, text in sections))),
            template=plan.identity,
            template_sha256=plan.sha256,
            sections=tuple(sections),
        )

    def template_hashes(self, tasks: Sequence[TaskSpec], options: PromptOptions) -> dict[str, str]:
        """Task key -> sha256 of the template files its prompts use, for the manifest."""
        if options.source == "dataset":
            return {task.key: DATASET_TEMPLATE for task in tasks}
        return {task.key: self._plan(task, options).sha256 for task in tasks}

    def validate(self, tasks: Sequence[TaskSpec], options: PromptOptions) -> None:
        """Render every dataset of every task once on a synthetic case, so that a missing template, a syntax
        error, an undefined name or a missing scenario stops the run before any model call."""
        if options.source == "dataset":
            return  # the prompts are data; a row without one becomes a DataError on that row
        for task in tasks:
            for dataset in task.datasets:
                try:
                    self.render(_probe_case(task, dataset), task, options)
                except DataError as exc:
                    raise ConfigError(f"prompts for {task.key}/{dataset.id}: {exc.reason}") from exc

    # -- plans and fingerprints -----------------------------------------------------------------------

    def _plan(self, task: TaskSpec, options: PromptOptions) -> _Plan:
        names = task.templates
        key = (task.key, names.role, names.instruction, names.format, options)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._build_plan(task, options)
        return plan

    def _build_plan(self, task: TaskSpec, options: PromptOptions) -> _Plan:
        names = [task.templates.role] if options.role else []
        names += [task.templates.instruction, _variant(task.templates.format, options.format)]
        sections = (("role",) if options.role else ()) + ("instruction", "format")
        digest = hashlib.sha256()
        for name in self._files_used(names):
            data = self._source(name).encode("utf-8")
            digest.update(f"{name}\0{len(data)}\0".encode())
            digest.update(data)
        try:
            parts = tuple((name, self._env.get_template(name)) for name in names)
        except jinja2.TemplateError as exc:
            raise ConfigError(f"prompt template for task {task.key}: {exc}") from exc
        return _Plan(parts=parts, sections=sections, identity=f"{task.key}:{options.name}", sha256=digest.hexdigest())

    def _source(self, name: str) -> str:
        try:
            return self._loader.get_source(self._env, name)[0]
        except jinja2.TemplateNotFound as exc:
            raise ConfigError(f"prompt template {name!r} not found under {self.root}") from exc

    def _files_used(self, roots: Sequence[str]) -> list[str]:
        """The root templates plus everything they include or import, transitively, found statically."""
        seen: set[str] = set()
        todo = list(roots)
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            try:
                tree = self._env.parse(self._source(name), name)
            except jinja2.TemplateSyntaxError as exc:
                raise ConfigError(f"prompt template {name!r}, line {exc.lineno}: {exc.message}") from exc
            for ref in meta.find_referenced_templates(tree):
                if ref is None:
                    # A computed name would escape the fingerprint: a changed file could go unnoticed.
                    raise ConfigError(f"prompt template {name!r} includes or imports a computed template name")
                todo.append(ref)
        return sorted(seen)


def default_library() -> PromptLibrary:
    """The library over the shipped ``prompts/`` folder, and first over the task folder when it is not the
    shipped one (``$U2EVAL_TASKS_DIR``: a new task brings its templates beside its file)."""
    try:
        root = resource_dir("prompts")
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from exc
    folder = tasks_dir()
    return _library(root, () if folder == resource_dir("tasks") else (folder,))


@cache
def _library(root: Path, extra: tuple[Path, ...]) -> PromptLibrary:
    return PromptLibrary(root, extra)


def render(case: Case, task: TaskSpec, options: PromptOptions = DEFAULT_OPTIONS) -> Prompt:
    """The prompt for one case, from the shipped templates (or the row's own prompt)."""
    return default_library().render(case, task, options)


def template_hashes(tasks: Sequence[TaskSpec], options: PromptOptions) -> dict[str, str]:
    """Task key -> sha256 of the shipped template files each task's prompts use."""
    return default_library().template_hashes(tasks, options)


def validate_templates(tasks: Sequence[TaskSpec], options: PromptOptions) -> None:
    """Fail with a ConfigError naming the template before any model call if a prompt cannot render."""
    default_library().validate(tasks, options)


# -- per-case helpers ---------------------------------------------------------------------------------


def _variant(format_template: str, variant: str) -> str:
    """classification/format.j2 + brief -> classification/format.brief.j2."""
    if variant == "default":
        return format_template
    stem, dot, extension = format_template.rpartition(".")
    return f"{stem}.{variant}.{extension}" if dot else f"{format_template}.{variant}"


def _media_type(case: Case) -> str:
    kind = case.image_format.strip().lower()
    if kind.startswith("image/"):
        return kind
    media_type = _MEDIA_TYPES.get(kind)
    if media_type is None:
        raise DataError(case.case_id, f"unsupported image format {case.image_format!r}")
    return media_type


def _dataset_template(case: Case) -> str:
    """The row's prompt with the viewer's escapes undone: ``\\_`` -> ``_``, a literal backslash-n -> newline.
    Plain replacements only: the text may hold braces that are not placeholders."""
    raw = case.dataset_prompt
    text = raw.replace("\\_", "_").replace("\\n", "\n").strip() if raw else ""
    if not text:
        raise DataError(case.case_id, "no prompt column")
    return text


def _probe_case(task: TaskSpec, dataset: DatasetSpec) -> Case:
    """A minimal synthetic row of a dataset, for validate(): every optional input present."""
    measurement = "{'pixel_size_mm': 0.1}" if task.capability == "regression" else None
    return Case(
        case_id=f"probe:{task.key}:{dataset.id}",
        task=task.key,
        dataset_id=dataset.id,
        dataset_name=dataset.source,
        source_file="",
        row_index=0,
        anatomy=dataset.anatomy,
        scenario=dataset.channel or dataset.keypoint or "structure",
        truth=None,
        options=dataset.labels,
        image=b"",
        image_format="png",
        columns=MappingProxyType({"measurement": measurement}),
    )
