"""Where U2-Bench comes from: the Hugging Face hub (pinned revision, resolved commit sha recorded), a local
folder in the same layout, or the bundled synthetic sample; and the provenance a run manifest records.
Reading the cases out of a source is ``u2eval.data.reader``'s job."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from u2eval.benchmark.tasks import TaskSpec, all_tasks
from u2eval.errors import ConfigError
from u2eval.resources import sample_dir

DEFAULT_REPO = "DolphinAI/u2-bench"
# The dataset revision u2eval evaluates by default. TODO: pin to a commit sha once one is verified; until then
# every run records the sha that "main" resolved to, so results stay traceable.
DEFAULT_REVISION = "main"
EXPLANATION_FILE = "an_explanation_of_the_columns.tsv"
# The columns of every data file, as the dataset card lists them (the reader needs only some of them).
CARD_COLUMNS: tuple[str, ...] = (
    "dataset_name",
    "img_data",
    "patient_id",
    "prompt",
    "anatomy_location",
    "demographic",
    "classification_task",
    "class_label",
    "options",
    "seg_data",
    "seg_channel_name",
    "gt_bbox",
    "keypoints",
    "measurement",
    "caption",
    "report",
    "notes",
)

SourceKind = Literal["sample", "local", "hub"]

_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class DataSource:
    """Where the TSVs come from, and the provenance a run manifest records about it."""

    kind: SourceKind
    root: Path
    repo_id: str | None = None
    revision: str | None = None
    commit_sha: str | None = None
    description: str = ""
    synthetic: bool = False  # made by u2eval synth (the bundled sample too): never ranked beside real-data results

    def manifest(self) -> dict[str, str | None]:
        fields: dict[str, str | None] = {
            "kind": self.kind,
            "root": str(self.root),
            "repo": self.repo_id,
            "revision": self.revision,
            "sha": self.commit_sha,
            "description": self.description,
        }
        return fields | ({"synthetic": "yes"} if self.synthetic else {})


def resolve_source(
    spec: str,
    *,
    revision: str | None = None,
    cache_dir: Path | str | None = None,
    tasks: Sequence[TaskSpec] | None = None,
) -> DataSource:
    """'sample' (bundled), a folder path (local), or 'hub' / 'hf:OWNER/NAME[@REV]' (download via the HF cache).

    ``tasks`` limits a hub download to those task folders (default: all). The hub path honours HF_TOKEN,
    HF_HOME / HF_HUB_CACHE, HF_HUB_OFFLINE and HF_ENDPOINT as they are *now* (huggingface_hub reads them once
    at import, so they are passed explicitly).
    """
    if spec == "hub" or spec.startswith("hf:"):
        repo_id, rev = _parse_hub_spec(spec, revision)
        return _hub_source(repo_id, rev, cache_dir, tasks if tasks is not None else all_tasks())
    if revision is not None:
        raise ConfigError(f"--revision applies to the hub only, not to data source {spec!r}")
    if spec == "sample":
        root = sample_dir()
        if not root.is_dir():
            raise ConfigError(f"the bundled sample is missing at {root}; reinstall u2eval")
        return DataSource(
            kind="sample",
            root=root,
            description="bundled synthetic sample (u2eval data synth, seed 0)",
            synthetic=True,
        )
    return _local_source(Path(spec).expanduser())


def _parse_hub_spec(spec: str, revision: str | None) -> tuple[str, str]:
    repo_id, rev = DEFAULT_REPO, None
    if spec.startswith("hf:"):
        repo_id, _, rev_part = spec[3:].partition("@")
        rev = rev_part or None
        if not _REPO_RE.match(repo_id):
            raise ConfigError(f"bad hub dataset {spec!r}: expected hf:OWNER/NAME[@REVISION]")
    if rev is not None and revision is not None and rev != revision:
        raise ConfigError(f"two revisions given: {rev!r} in {spec!r} and --revision {revision!r}")
    return repo_id, rev or revision or DEFAULT_REVISION


def _local_source(root: Path) -> DataSource:
    if not root.exists():
        raise ConfigError(f"data folder not found: {root} (use 'sample', 'hub', 'hf:OWNER/NAME[@REV]' or a folder)")
    if not root.is_dir():
        raise ConfigError(f"data source {root} is not a folder")
    if not any((root / t.folder).is_dir() for t in all_tasks()):
        raise ConfigError(f"{root} holds none of the U2-Bench task folders ({all_tasks()[0].folder}/, ...)")
    root = root.resolve()
    # A folder inside the HF cache (.../datasets--OWNER--NAME/snapshots/<sha>) still knows its commit.
    sha = root.name if _SHA_RE.match(root.name) and root.parent.name == "snapshots" else None
    if is_synthetic(root):
        return DataSource(
            kind="local", root=root, description=f"synthetic data (u2eval synth) in {root}", synthetic=True
        )
    return DataSource(kind="local", root=root, commit_sha=sha, description=f"local folder {root}")


# The card u2eval synth writes at the top of every folder it makes (u2eval.data.synth.generate).
SYNTH_CARD, SYNTH_MARKER = "README.md", "generated by u2eval.data.synth.generate"


def is_synthetic(root: Path) -> bool:
    """Whether a data folder was made by u2eval synth (its card says so)."""
    card = root / SYNTH_CARD
    return card.is_file() and SYNTH_MARKER in card.read_text(encoding="utf-8", errors="replace")


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_cache_dir(cache_dir: Path | str | None) -> str | None:
    if cache_dir is not None:
        return str(cache_dir)
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None  # huggingface_hub's own default


def _hub_source(repo_id: str, revision: str, cache_dir: Path | str | None, tasks: Sequence[TaskSpec]) -> DataSource:
    from huggingface_hub import snapshot_download  # imported late: most runs never touch the hub

    offline = _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")
    endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/") or None
    patterns = [f"{t.folder}/*.tsv" for t in tasks] + [EXPLANATION_FILE]
    try:
        path = snapshot_download(
            repo_id,
            repo_type="dataset",
            revision=revision,
            cache_dir=_hub_cache_dir(cache_dir),
            allow_patterns=patterns,
            token=os.environ.get("HF_TOKEN") or None,
            endpoint=endpoint,
            local_files_only=offline,
        )
    except (OSError, ValueError) as exc:  # hub HTTP errors, offline misses and cache problems are all OSErrors
        raise ConfigError(_hub_error(exc, repo_id, revision, offline)) from exc
    root = Path(path)
    sha = root.name if _SHA_RE.match(root.name) else None
    return DataSource(
        kind="hub",
        root=root,
        repo_id=repo_id,
        revision=revision,
        commit_sha=sha,
        description=f"hf:{repo_id}@{revision} ({sha or 'unknown sha'})"
        + (" from the offline cache" if offline else ""),
    )


def _hub_error(exc: Exception, repo_id: str, revision: str, offline: bool) -> str:
    from huggingface_hub import errors as hf

    where = f"hf:{repo_id}@{revision}"
    if isinstance(exc, hf.GatedRepoError):
        return f"{where} is gated: accept its terms on the Hub and set HF_TOKEN to a token with access"
    if isinstance(exc, hf.RevisionNotFoundError):
        return f"{where}: revision {revision!r} not found"
    if isinstance(exc, hf.RepositoryNotFoundError):
        return f"{where}: dataset repository not found (or private: set HF_TOKEN)"
    if isinstance(exc, hf.LocalEntryNotFoundError | hf.OfflineModeIsEnabled) or offline:
        mode = "offline mode is on (HF_HUB_OFFLINE)" if offline else "the Hub could not be reached"
        return f"{where} is not in the local Hugging Face cache and {mode}"
    if isinstance(exc, hf.HfHubHTTPError):
        return f"{where}: download failed: {str(exc).splitlines()[0]}"
    return f"{where}: download failed: {type(exc).__name__}: {exc}"
