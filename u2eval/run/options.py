"""What a run is asked to do (:class:`RunOptions`), the folder it lands in by default, and what its manifest
says about the part of the cases it keeps."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from u2eval.benchmark.prompts import PromptOptions
from u2eval.models.pricing import Price
from u2eval.models.registry import Preset
from u2eval.provenance import ids_sha256
from u2eval.records import GenerationConfig
from u2eval.run.pacing import DispatchOptions
from u2eval.run.shards import Shard, shard_label
from u2eval.scoring.summary import subset_reasons


@dataclass(frozen=True)
class RunProgress:
    """Where a run stands, for a progress bar: cases answered (now or before) of those expected, and the
    retries and infra errors so far."""

    done: int
    total: int | None  # None: not known up front (an anatomy selection, a shard)
    retries: int = 0
    infra_errors: int = 0
    note: str = ""  # where a batch run stands ("2 batch(es) in progress"), for the bar's info


ProgressHook = Callable[[RunProgress], None]


@dataclass(frozen=True)
class RunOptions:
    model: str
    data: str = "sample"
    revision: str | None = None
    tasks: tuple[str, ...] | None = None
    limit: int | None = None
    anatomy: tuple[str, ...] | None = None  # only cases of these anatomies (lower case); for prompt ablations
    seed: int = 0
    out: Path | None = None
    results_root: Path = Path("results")
    prompt: PromptOptions = field(default_factory=PromptOptions)
    concurrency: int | None = None
    base_url: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    # Provider arguments (-M key=value), merged over the preset's ``extra``: the adapter checks them and puts
    # what it sends into the model identity, so another argument is another run.
    model_args: Mapping[str, object] = field(default_factory=dict)
    case_ids: frozenset[str] | None = None  # only these cases (--case-id)
    rpm: float | None = None  # requests per minute (None: unlimited)
    tpm: float | None = None  # tokens per minute (None: unlimited)
    timeout_s: float | None = None  # per attempt (None: the dispatcher's default)
    max_attempts: int | None = None  # per request, the first included (None: the dispatcher's default)
    shard: Shard | None = None  # (i, n): only the cases whose id hashes to i modulo n; `u2eval merge` joins them
    # Read the dataset in a child process (None: yes, except for the small bundled sample, where starting
    # one costs more than it saves).
    reader_process: bool | None = None
    grounded: bool = False  # also score the answers' regions (grounded.json); never changes the U2-Score
    box_convention: str | None = None  # how answers write boxes (default: the preset's); u2eval.grounded.boxes
    force: bool = False  # start the folder afresh when it holds another run (u2eval.run.identity)
    # Reference quirks switched by hand (u2eval.scoring.switches): recorded in the manifest, redone by re-scoring.
    quirks: Mapping[str, bool] = field(default_factory=dict)
    # A control (u2eval.data.controls): no-image, text-only or other-image in place of each case's image.
    control: str | None = None
    # List prices over the preset's (--price): what --dry-run's estimate and the run's cost are reckoned with.
    price: Price | None = None
    # The provider's batch API (u2eval.run.batch): submit what the store lacks, collect what has ended; ``wait``
    # polls every ``poll_interval_s`` until every batch is collected; ``batch_size``: at most this many
    # requests a batch (None: as many as the provider's limits allow).
    batch: bool = False
    wait: bool = False
    poll_interval_s: float = 60.0
    batch_size: int | None = None
    max_cost_usd: float | None = None  # --max-cost: spent plus in flight never passes it (u2eval.run.budget)


def default_folder(options: RunOptions) -> Path:
    """A stable folder name, so running the same command again resumes instead of starting over."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", options.model).strip("-")
    data = "sample" if options.data == "sample" else re.sub(r"[^A-Za-z0-9._-]+", "-", Path(options.data).name)
    selection = f"__{'+'.join(options.anatomy)}" if options.anatomy else ""
    # A quick `--tasks dd --limit 1` run must not land in (and overwrite the summary of) the full run's folder.
    if options.tasks:
        selection += f"__{'+'.join(sorted(t.lower() for t in options.tasks))}"
    if options.limit is not None:
        selection += f"__limit{options.limit}"
    if options.shard is not None:
        selection += f"__shard{options.shard[0]}of{options.shard[1]}"
    if options.case_ids is not None:
        selection += f"__cases-{ids_sha256(sorted(options.case_ids))[:8]}"
    # A control run never shares a folder (nor its stored answers' summary) with the run it controls.
    prompt = options.prompt.name + (f"__{options.control}" if options.control else "")
    return options.results_root / f"{slug}__{data}__{prompt}__seed{options.seed}{selection}"


def selection(options: RunOptions, matched: int) -> dict[str, str | None]:
    """The manifest's ``dataset.selection``: which part of the cases the run kept (none: all of them);
    ``matched``: how many of the chosen case ids name a case of the run."""
    parts = [f"anatomy={','.join(options.anatomy)}"] if options.anatomy else []
    if options.shard is not None:
        parts.append(shard_label(options.shard))
    if options.case_ids is not None:
        chosen = len(options.case_ids)
        parts.append(f"{chosen} case id(s) chosen" if matched == chosen else f"{matched} of {chosen} chosen case ids")
    return {"selection": "; ".join(parts)} if parts else {}


def subset(options: RunOptions, matched: int) -> list[str]:
    """Why the run asks only part of its tasks' cases (summary.json's ``subset``), as its manifest will say."""
    return subset_reasons(options.limit, selection(options, matched).get("selection"))


def generation(options: RunOptions, preset_generation: GenerationConfig | None) -> GenerationConfig:
    """The preset's generation settings with the command's over them; the seed is the run's."""
    base = preset_generation or GenerationConfig()
    updates: dict[str, object] = {"seed": options.seed}
    if options.max_tokens is not None:
        updates["max_tokens"] = options.max_tokens
    if options.temperature is not None:
        updates["temperature"] = options.temperature
    if options.top_p is not None:
        updates["top_p"] = options.top_p
    return base.model_copy(update=updates)


def dispatch_options(options: RunOptions, preset: Preset | None, generation: GenerationConfig) -> DispatchOptions:
    defaults = DispatchOptions()
    return DispatchOptions(
        concurrency=options.concurrency or (preset.concurrency if preset else defaults.concurrency),
        max_attempts=options.max_attempts or defaults.max_attempts,
        timeout_s=options.timeout_s or defaults.timeout_s,
        rpm=options.rpm,
        tpm=options.tpm,
        output_tokens=generation.max_tokens,
    )
