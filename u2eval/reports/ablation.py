"""Prompt ablations: the same cases under several prompt variants with one model, compared pairwise.

``run_ablation`` runs each variant with ``u2eval.run.runner.run`` into ``OUT/<variant>/``. Answers are shared
where prompts are identical: before a variant runs, every answer the earlier variants stored (never an
infra error) is copied into its response store, so a prompt that renders the same under two variants (the
same store key: model, settings, prompt text and image) is asked once. A variant's ``responses.jsonl`` may
therefore hold answers to other variants' prompts; they are never judged, since judging follows the keys
in its own ``cases.jsonl``.

Controls (``u2eval.data.controls``: ``no-image``, ``text-only``, ``other-image``) run after the variants, each
with the baseline's prompt and another image (or none) in each case's image's place, into ``OUT/<control>/``;
they are compared with the baseline as the variants are, and ``u2eval.reports.controls.survival`` says how much
of each task's score is left without the case's own image.

Each variant is then compared with the first (the baseline) by ``u2eval.reports.paired.compare``; ``compare_folders``
does the same for two existing runs (``u2eval ablate --compare``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from u2eval.benchmark.prompts import PromptOptions
from u2eval.data.controls import CONTROLS, check_control
from u2eval.errors import ConfigError, did_you_mean
from u2eval.models.protocol import ModelAdapter
from u2eval.records import ScoringMode
from u2eval.reports.controls import ControlSurvival, survival
from u2eval.reports.paired import Comparison, TaskComparison, adjust, compare
from u2eval.reports.rundata import load_run
from u2eval.resources import resource_dir
from u2eval.run.runner import RunOptions, RunProgress, run
from u2eval.run.store import ResponseStore
from u2eval.stats import CONFIDENCE, DEFAULT_RESAMPLES, DEFAULT_SEED

__all__ = [
    "PRESETS",
    "AblationOptions",
    "AblationReport",
    "Comparison",
    "ControlSurvival",
    "TaskComparison",
    "compare_folders",
    "parse_variant",
    "run_ablation",
]

# The paper's anatomy ablation (facts §3.6): breast and thyroid cases, with vs without the anatomy named.
PRESETS: dict[str, dict[str, tuple[str, ...]]] = {
    "anatomy": {"variants": ("ours", "ours-noanatomy"), "anatomy": ("breast", "thyroid")},
}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class VariantRun(_Frozen):
    variant: str
    folder: str
    n_cases: int
    asked: int | None  # None: an existing run being compared
    shared: int | None  # answered from a store without asking the model (earlier variants, or a resumed run)
    infra_errors: int


class AblationReport(_Frozen):
    schema_version: int = 1
    model: str | None
    mode: ScoringMode
    resamples: int
    seed: int
    confidence: float
    design: dict[str, str | int | list[str] | None]
    runs: list[VariantRun]
    comparisons: list[Comparison]
    # Control runs beside the baseline (u2eval.reports.controls); left out of ablation.json when there are none.
    controls: list[ControlSurvival] = []


@dataclass(frozen=True)
class AblationOptions:
    model: str
    variants: tuple[str, ...]
    controls: tuple[str, ...] = ()  # run with the first variant's prompt: no-image, text-only, other-image
    data: str = "sample"
    tasks: tuple[str, ...] | None = None
    limit: int | None = None
    anatomy: tuple[str, ...] | None = None
    seed: int = 0
    out: Path | None = None
    results_root: Path = Path("results")
    mode: ScoringMode = "strict"
    resamples: int = DEFAULT_RESAMPLES
    bootstrap_seed: int = DEFAULT_SEED
    concurrency: int | None = None
    base_url: str | None = None
    # Whatever else `u2eval run` takes, for every variant alike (RunOptions fields: revision, rpm, tpm,
    # timeout_s, max_attempts, temperature, top_p, max_tokens, model_args, case_ids, ...).
    run_settings: Mapping[str, Any] = field(default_factory=dict)


def format_variants() -> tuple[str, ...]:
    """The output-format variants the shipped templates offer (``<format>.<variant>.j2`` files)."""
    root = resource_dir("prompts")
    return tuple(sorted({p.name.split(".")[1] for p in root.glob("*/format.*.j2") if p.name.count(".") == 2}))


def known_variants() -> list[str]:
    """Every prompt variant there is, as written on the command line."""
    parts = ["noanatomy", "norole", *format_variants()]
    return ["ours", *(f"ours-{p}" for p in parts), "dataset"]


def parse_variant(name: str) -> PromptOptions:
    """'ours', 'ours-noanatomy', 'ours-norole', 'ours-brief', 'ours-noanatomy-norole-brief' or 'dataset'."""
    if name == "dataset":
        return PromptOptions(source="dataset")
    if name in CONTROLS:
        raise ConfigError(f"{name!r} is a control, not a prompt variant: give it with --controls {name}")
    pieces = name.split("-")
    if pieces[0] != "ours":
        hint = did_you_mean(name, known_variants())
        raise ConfigError(f"unknown prompt variant {name!r}{hint}; variants: {', '.join(known_variants())}")
    anatomy, role, fmt = True, True, "default"
    for piece in pieces[1:]:
        if piece == "noanatomy" and anatomy:
            anatomy = False
        elif piece == "norole" and role:
            role = False
        elif fmt == "default" and piece in format_variants():
            fmt = piece
        elif piece not in ("noanatomy", "norole", "default"):
            hint = did_you_mean(name, known_variants())
            raise ConfigError(f"unknown prompt variant {name!r}{hint}; variants: {', '.join(known_variants())}")
        else:
            raise ConfigError(f"prompt variant {name!r} repeats or mixes up a part")
    options = PromptOptions(source="ours", anatomy=anatomy, role=role, format=fmt)
    if options.name != name:
        raise ConfigError(f"write prompt variant {name!r} as {options.name!r}")
    return options


def share_answers(sources: Sequence[Path], target: Path) -> int:
    """Copy into ``target``'s store the answers of ``sources`` it does not hold yet; returns how many."""
    target.mkdir(parents=True, exist_ok=True)
    with ResponseStore(target) as store:
        new = {}
        for source in sources:
            for key, completion in ResponseStore(source, repair=False).answers().items():
                if not store.answered(key) and key not in new:
                    new[key] = completion
        store.append(new.values())
    return len(new)


def _default_out(options: AblationOptions) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", options.model).strip("-")
    data = "sample" if options.data == "sample" else re.sub(r"[^A-Za-z0-9._-]+", "-", Path(options.data).name)
    selection = f"__{'+'.join(options.anatomy)}" if options.anatomy else ""
    # Controls add runs beside the variants' (their own subfolders): the same folder, so the variants are shared.
    return options.results_root / f"ablate__{slug}__{data}__seed{options.seed}{selection}"


def run_ablation(
    options: AblationOptions,
    adapter_factory: Callable[[], ModelAdapter] | None = None,
    progress: Callable[[str, RunProgress], None] | None = None,
) -> tuple[AblationReport, Path]:
    """Run every variant (resuming what is stored), then compare each variant with the first one.

    ``adapter_factory``: builds a fresh adapter per variant instead of the one ``options.model`` names
    (library use and tests); each run closes its adapter. ``progress(variant, where)``: as each run goes."""
    if len(set(options.controls)) != len(options.controls):
        raise ConfigError(f"a control is named twice: {', '.join(options.controls)}")
    needed = 1 if options.controls else 2
    if len(options.variants) < needed or len(set(options.variants)) != len(options.variants):
        raise ConfigError("an ablation needs at least two different prompt variants, e.g. ours,ours-noanatomy")
    prompts = [parse_variant(v) for v in options.variants]
    plan: list[tuple[str, PromptOptions, str | None]] = [
        (name, prompt, None) for name, prompt in zip(options.variants, prompts, strict=True)
    ]
    plan += [(control, prompts[0], check_control(control)) for control in options.controls]
    out = options.out or _default_out(options)
    runs: list[VariantRun] = []
    folders: list[Path] = []
    for name, prompt, control in plan:
        folder = out / name
        share_answers(folders, folder)
        settings = RunOptions(
            model=options.model,
            data=options.data,
            tasks=options.tasks,
            limit=options.limit,
            anatomy=tuple(a.lower() for a in options.anatomy) if options.anatomy else None,
            seed=options.seed,
            out=folder,
            prompt=prompt,
            concurrency=options.concurrency,
            base_url=options.base_url,
            control=control,
        )
        result = run(
            replace(settings, **options.run_settings),
            progress=partial(progress, name) if progress is not None else None,
            adapter=adapter_factory() if adapter_factory is not None else None,
        )
        folders.append(folder)
        runs.append(
            VariantRun(
                variant=name,
                folder=str(folder),
                n_cases=result.manifest.n_cases,
                asked=result.requested,
                shared=result.reused,
                infra_errors=result.infra_errors,
            )
        )
    loaded = [load_run(folder) for folder in folders]
    names = [name for name, _, _ in plan]
    baseline = options.variants[0]
    comparisons = [
        compare(loaded[0], other, baseline, name, options.mode, options.resamples, options.bootstrap_seed)
        for name, other in zip(names[1:], loaded[1:], strict=True)
    ]
    controls = [
        survival(loaded[0], other, baseline, options.mode)
        for (_, _, control), other in zip(plan, loaded, strict=True)
        if control is not None
    ]
    design: dict[str, str | int | list[str] | None] = {
        "variants": list(options.variants),
        "baseline": options.variants[0],
        "data": options.data,
        "tasks": list(options.tasks) if options.tasks else None,
        "anatomy": list(options.anatomy) if options.anatomy else None,
        "limit": options.limit,
        "run_seed": options.seed,
    } | ({"controls": list(options.controls)} if options.controls else {})
    report = AblationReport(
        model=loaded[0].label,
        mode=options.mode,
        resamples=options.resamples,
        seed=options.bootstrap_seed,
        confidence=CONFIDENCE,
        design=design,
        runs=runs,
        comparisons=adjust(comparisons),
        controls=controls,
    )
    return report, out


def compare_folders(
    folder_a: Path,
    folder_b: Path,
    mode: ScoringMode = "strict",
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    anatomy: Sequence[str] | None = None,
) -> AblationReport:
    """``u2eval ablate --compare A B``: the same report for two existing runs."""
    a, b = load_run(folder_a), load_run(folder_b)
    label_a, label_b = a.label, b.label
    if label_a == label_b:
        label_a, label_b = a.manifest.prompt_variant, b.manifest.prompt_variant
    if label_a == label_b:
        label_a, label_b = folder_a.name, folder_b.name
    if label_a == label_b:
        label_a, label_b = str(folder_a), str(folder_b)
    comparison = compare(a, b, label_a, label_b, mode, resamples, seed, anatomy)
    runs = [
        VariantRun(
            variant=label,
            folder=str(loaded.folder),
            n_cases=len(loaded.judgements),
            asked=None,
            shared=None,
            infra_errors=len(loaded.summary.infra_error_case_ids),
        )
        for label, loaded in ((label_a, a), (label_b, b))
    ]
    design: dict[str, str | int | list[str] | None] = {
        "compare": [str(folder_a), str(folder_b)],
        "anatomy": list(anatomy) if anatomy else None,
    }
    model = a.label if a.label == b.label else None
    # A control run beside the run it controls: how much of each score survives (B's control, A as its baseline).
    # (Not under an anatomy selection: the scores are the whole runs'.)
    controls = [survival(a, b, label_a, mode)] if b.manifest.control is not None and not anatomy else []
    return AblationReport(
        model=model,
        mode=mode,
        resamples=resamples,
        seed=seed,
        confidence=CONFIDENCE,
        design=design,
        runs=runs,
        comparisons=adjust([comparison]),
        controls=controls,
    )
