"""A run folder belongs to one run identity: the model, its generation settings, the prompt, the seed and the
data. A second run with another identity on the same ``--out`` would leave a folder whose summary, manifest
and stored answers come from two runs; it is refused with one line that says what differs, unless ``--force``
starts the folder afresh. Extending a run (more tasks, a larger ``--limit``, another shard) keeps its identity.

The identity is written (``identity.json``) when the run starts, so an interrupted run is claimed too; a
folder whose run stored no answer (say a model name the provider refused at the preflight) is taken over.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

from u2eval.errors import ConfigError
from u2eval.grounded.scorer import GROUNDED_CASES_FILE, GROUNDED_FILE
from u2eval.grounded.truth import TRUTH_FILE
from u2eval.records import GenerationConfig, ModelInfo
from u2eval.run.folder import BATCHES_FILE, CASES_FILE, JUDGEMENTS_FILE, MANIFEST_FILE, SUMMARY_FILE, RunFolder
from u2eval.run.resume import STAMP_FILE
from u2eval.run.sent_prompts import PROMPTS_FILE
from u2eval.run.store import RESPONSES_FILE
from u2eval.scoring.summary_report import SUMMARY_MD

IDENTITY_FILE = "identity.json"
VIEW_FOLDER = "view"  # where `u2eval view` writes a run's case browser by default
# Every file a run writes into its folder (the lock stays: it is held while this runs).
RUN_FILES = (
    IDENTITY_FILE,
    RESPONSES_FILE,
    CASES_FILE,
    CASES_FILE + ".part",
    PROMPTS_FILE,
    JUDGEMENTS_FILE,
    SUMMARY_FILE,
    SUMMARY_MD,
    MANIFEST_FILE,
    STAMP_FILE,
    GROUNDED_FILE,
    GROUNDED_CASES_FILE,
    TRUTH_FILE,
    BATCHES_FILE,
)


def run_identity(
    model: ModelInfo,
    generation: GenerationConfig,
    prompt_variant: str,
    templates: Mapping[str, str],
    seed: int,
    dataset: Mapping[str, str | None],
    control: str | None = None,
) -> dict[str, object]:
    """What makes two runs the same run (JSON-ready). A control (``u2eval.data.controls``) is part of it, named
    only when there is one, so the identity of every other run reads as it did before controls existed."""
    identity: dict[str, object] = {
        "model": f"{model.adapter}/{model.model}" + (f"@{model.revision}" if model.revision else ""),
        "generation": generation.model_dump(mode="json"),
        "prompt": prompt_variant,
        "templates": dict(sorted(templates.items())),
        "seed": seed,
        "data": {k: dataset.get(k) for k in ("kind", "repo", "revision", "root")},
    }
    return identity | ({"control": control} if control else {})


def _flat(identity: Mapping[str, object], keep: Mapping[str, object] | None = None) -> dict[str, object]:
    """One level of nesting flattened ('generation.temperature'); a template of a task the other run lacks is
    left out (another task selection extends a run; another template for a shared task does not)."""
    flat: dict[str, object] = {}
    for key, value in identity.items():
        if isinstance(value, dict):
            other = keep.get(key) if keep is not None else None
            for sub, item in value.items():
                if key == "templates" and isinstance(other, dict) and sub not in other:
                    continue
                flat[f"{key}.{sub}"] = item
        else:
            flat[key] = value
    return flat


def _differences(recorded: Mapping[str, object], identity: Mapping[str, object]) -> str:
    """What differs, in words; a setting named on one side only (a control, model arguments) differs too."""
    before, now = _flat(recorded, identity), _flat(identity, recorded)
    keys = [*now, *(k for k in before if k not in now)]
    return "; ".join(
        f"{key} {before.get(key)} there, {now.get(key)} now" for key in keys if before.get(key) != now.get(key)
    )


def _recorded(folder: Path) -> dict[str, object] | None:
    """The identity the folder holds: its identity.json, else what its manifest says (older runs), else None."""
    try:
        data = json.loads((folder / IDENTITY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if isinstance(data, dict):
        return data
    manifest = RunFolder(folder).manifest()
    if manifest is None:
        return None
    return run_identity(
        manifest.model,
        manifest.generation,
        manifest.prompt_variant,
        manifest.templates,
        manifest.seed,
        manifest.dataset,
        manifest.control.name if manifest.control is not None else None,
    )


def _holds_answers(folder: Path) -> bool:
    # A provider batch submitted from the folder (batches.jsonl) is paid-for work too, before any answer is stored.
    written = [folder / RESPONSES_FILE, folder / BATCHES_FILE]
    return any(path.is_file() and path.stat().st_size > 0 for path in written) or (folder / SUMMARY_FILE).is_file()


def claim(folder: Path, identity: Mapping[str, object], force: bool) -> None:
    """Make ``folder`` this run's: check the identity it holds, or start it afresh (``force``), then record it."""
    path = folder / IDENTITY_FILE
    recorded = _recorded(folder)
    if recorded is not None:
        differs = _differences(recorded, identity)
        if differs and not force and _holds_answers(folder):  # a run that stored nothing (a failed preflight) yields
            raise ConfigError(
                f"{folder} holds another run ({differs}); use another --out, or --force to start the folder afresh"
            )
        if differs:
            for name in RUN_FILES:
                (folder / name).unlink(missing_ok=True)
            shutil.rmtree(folder / VIEW_FOLDER, ignore_errors=True)  # another run's cases: never shown as this one's
    path.write_text(json.dumps(identity, sort_keys=True, indent=2) + "\n", encoding="utf-8")
