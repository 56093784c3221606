"""``u2eval run --shard i/n`` and ``u2eval merge``: the shards of the bundled sample partition it, and their
merge is the unsharded run, byte for byte, or a one-line refusal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from model_adapters.random import RandomAdapter, guess
from u2eval.benchmark.prompts import PromptOptions
from u2eval.errors import ConfigError
from u2eval.models.protocol import ModelRequest
from u2eval.records import Completion, ModelInfo
from u2eval.run.folder import RunFolder
from u2eval.run.merge import merge_runs
from u2eval.run.runner import RunOptions, default_folder, run
from u2eval.run.shards import in_shard, parse_shard, selection_parts


def _ids(folder: Path) -> list[str]:
    return [c.case.case_id for c in RunFolder(folder).cases()]


@pytest.fixture(scope="module")
def full_and_shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("shards")
    run(RunOptions(model="random", out=root / "full", seed=3))
    shards = [root / f"s{i}" for i in range(3)]
    for i, folder in enumerate(shards):
        run(RunOptions(model="random", out=folder, seed=3, shard=(i, 3)))
    return root / "full", shards


def test_a_shard_is_a_fixed_share_of_case_ids() -> None:
    ids = [f"dd/21/{i}/{i:08x}" for i in range(3000)]
    owners = [[i for i in range(4) if in_shard(case_id, (i, 4))] for case_id in ids]
    assert all(len(o) == 1 for o in owners)  # each case in exactly one shard
    sizes = [sum(1 for o in owners if o == [i]) for i in range(4)]
    assert all(650 < s < 850 for s in sizes), sizes
    assert all(in_shard(case_id, (0, 1)) for case_id in ids)
    assert parse_shard(" 2/5 ") == (2, 5) and parse_shard("0/1") == (0, 1)
    for bad in ("3/3", "1", "-1/2", "a/b", "1/0"):
        with pytest.raises(ConfigError, match="i/n"):
            parse_shard(bad)
    assert selection_parts("anatomy=breast; shard=1/4") == ("anatomy=breast", (1, 4))
    assert selection_parts("shard=0/2") == (None, (0, 2)) and selection_parts("anatomy=x") == ("anatomy=x", None)


def test_shards_partition_the_run_and_say_so(full_and_shards: tuple[Path, list[Path]]) -> None:
    full, shards = full_and_shards
    parts = [_ids(s) for s in shards]
    assert sorted(sum(parts, [])) == sorted(_ids(full)) and all(parts)
    for i, shard in enumerate(shards):
        manifest = json.loads((shard / "manifest.json").read_text())
        assert manifest["dataset"]["selection"] == f"shard={i}/3" and manifest["n_cases"] == len(parts[i])
    folder = default_folder(RunOptions(model="random", shard=(1, 3), tasks=("dd",)))
    assert folder.name.endswith("__dd__shard1of3")
    assert default_folder(RunOptions(model="random", shard=(1, 3))) != default_folder(RunOptions(model="random"))


def test_the_merge_of_three_shards_is_the_unsharded_run(
    full_and_shards: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    full, shards = full_and_shards
    result = merge_runs(list(reversed(shards)), tmp_path / "merged")  # given in any order
    merged = tmp_path / "merged"
    assert (merged / "summary.json").read_bytes() == (full / "summary.json").read_bytes()
    assert (merged / "cases.jsonl").read_bytes() == (full / "cases.jsonl").read_bytes()  # canonical order
    assert (merged / "judgements.jsonl").read_bytes() == (full / "judgements.jsonl").read_bytes()
    mine, theirs = json.loads((merged / "manifest.json").read_text()), json.loads((full / "manifest.json").read_text())
    for field in ("case_ids_sha256", "n_cases", "model", "generation", "tasks", "templates", "seed", "limit"):
        assert mine[field] == theirs[field], field
    assert "selection" not in mine["dataset"]  # a whole run again: no longer flagged partial
    assert [json.loads(mine["dataset"]["merged_from"])[i].endswith(f"(shard {i}/3)") for i in range(3)] == [True] * 3
    assert mine["dispatch"]["requests"] == theirs["dispatch"]["requests"] == result.manifest.n_cases
    assert result.infra_errors == 0 and result.summary.status == "complete"


def test_refusals_are_one_line(full_and_shards: tuple[Path, list[Path]], tmp_path: Path) -> None:
    full, (s0, s1, s2) = full_and_shards

    def refused(folders: Sequence[Path], message: str) -> None:
        with pytest.raises(ConfigError, match=message) as info:
            merge_runs(folders, tmp_path / "out")
        assert "\n" not in str(info.value)

    refused([s0, s1], r"missing shard\(s\) 2/3 of 3")
    refused([s0, s1, s1, s2], "shard 1/3 given twice")
    refused([s0, s1, full], "is not a shard run")
    refused([s0, tmp_path / "nowhere"], "no such run folder")
    other = tmp_path / "other"
    small = {"tasks": ("dd",), "limit": 2}
    run(RunOptions(model="random", out=other / "seed4", seed=4, shard=(1, 3)))
    refused([s0, other / "seed4", s2], "different model")
    run(RunOptions(model="random", out=other / "dd", seed=3, shard=(1, 3), **small))  # type: ignore[arg-type]
    refused([s0, other / "dd", s2], "different tasks")
    run(RunOptions(model="random", out=other / "tokens", seed=3, shard=(1, 3), max_tokens=5))
    refused([s0, other / "tokens", s2], "different generation settings")
    variant = RunOptions(
        model="random", out=other / "noanat", seed=3, shard=(1, 3), prompt=PromptOptions(anatomy=False)
    )
    run(variant)
    refused([s0, other / "noanat", s2], "different prompt variant")
    from u2eval.resources import sample_dir

    shutil.copytree(sample_dir(), other / "data")
    run(RunOptions(model="random", data=str(other / "data"), out=other / "local", seed=3, shard=(1, 3)))
    refused([s0, other / "local", s2], "different datasets")
    grounded = RunOptions(model="random", out=other / "grounded", seed=3, shard=(1, 3), grounded=True)
    run(grounded)
    refused([s0, other / "grounded", s2], r"different grounded scoring \(--grounded\) \(false vs true\)")
    convention = other / "convention"
    shutil.copytree(s1, convention)
    manifest = json.loads((convention / "manifest.json").read_text())
    (convention / "manifest.json").write_text(json.dumps(manifest | {"box_convention": "gemini"}))
    refused([s0, convention, s2], r'different box convention \(null vs "gemini"\)')
    run(RunOptions(model="random", out=other / "half", seed=3, shard=(1, 2)))
    refused([s0, other / "half", s2], r"different splits \(n=2, n=3\)")
    # A shard whose cases are not its own (copied and relabelled): the overlap is found, not merged twice.
    fake = other / "fake"
    shutil.copytree(s0, fake)
    manifest = json.loads((fake / "manifest.json").read_text())
    manifest["dataset"]["selection"] = "shard=1/3"
    (fake / "manifest.json").write_text(json.dumps(manifest))
    refused([s0, fake, s2], "overlapping shards: case .* is in")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty and not an earlier merge"):
        merge_runs([s0, s1, s2], tmp_path / "busy")
    with pytest.raises(ConfigError, match="is one of the shards"):
        merge_runs([s0, s1, s2], s1)


class FlakyRandom:
    """The random baseline (same identity, same answers) whose calls fail for the cases in ``failing``."""

    def __init__(self, failing: set[str]) -> None:
        self.failing = failing
        self._random = RandomAdapter(seed=3)

    @property
    def info(self) -> ModelInfo:
        return self._random.info

    @property
    def max_batch_size(self) -> int:
        return 64

    async def generate(self, requests: Sequence[ModelRequest]) -> list[Completion]:
        return [
            Completion(case_id=r.case.case_id, key=r.key, error="server", error_message="HTTP 503")
            if r.case.case_id in self.failing
            else Completion(case_id=r.case.case_id, key=r.key, text=guess(r.case, 3))
            for r in requests
        ]

    async def aclose(self) -> None:
        return None


def test_a_shard_with_infra_errors_is_named_and_a_rerun_and_remerge_heals_it(
    full_and_shards: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    full, (s0, s1, s2) = full_and_shards
    flaky = tmp_path / "s1"
    options = RunOptions(model="random", out=flaky, seed=3, shard=(1, 3))
    run(options, adapter=FlakyRandom(set(_ids(s1)[:4])))
    first = merge_runs([s0, flaky, s2], tmp_path / "merged")
    assert first.infra_errors == 4 and first.infra_shards == (flaky,)
    assert sorted(first.summary.infra_error_case_ids) == sorted(_ids(s1)[:4])
    run(options)  # the same shard again: only its 4 failed cases are asked
    healed = merge_runs([s0, flaky, s2], tmp_path / "merged")  # into the earlier merge's folder
    assert healed.infra_errors == 0
    assert (tmp_path / "merged" / "summary.json").read_bytes() == (full / "summary.json").read_bytes()


def test_the_command_line_shards_and_merges(tmp_path: Path) -> None:
    def u2eval(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "COLUMNS": "200"}
        return subprocess.run(
            [sys.executable, "-m", "u2eval", *args], capture_output=True, text=True, timeout=120, env=env
        )

    common = ("--model", "random", "--tasks", "dd,ll", "--limit", "3")
    for i in range(2):
        done = u2eval("run", *common, "--shard", f"{i}/2", "--out", str(tmp_path / f"s{i}"))
        assert done.returncode == 0, done.stderr
    merged = u2eval("merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "m"))
    assert merged.returncode == 0, merged.stderr
    assert "merged run folder" in merged.stderr and "U2-Score" in merged.stdout
    bad = u2eval("run", *common, "--shard", "2/2")
    assert bad.returncode == 2 and "--shard takes i/n" in bad.stderr
    missing = u2eval("merge", str(tmp_path / "s0"), "--out", str(tmp_path / "m2"))
    assert missing.returncode == 2 and "missing shard(s) 1/2 of 2" in missing.stderr
