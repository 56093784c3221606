"""Behaviour unchanged: the scores of a fixed set of runs, saved once and compared byte for byte after a change.

Runs, through the CLI as a user would (each in a fresh folder):

- on the bundled sample: the random baseline; a replay of its answers; the grounded stand-in with
  ``--grounded``; a prompt ablation (random; ours vs ours-noanatomy; DD and CVE);
- on the full synthetic set (7,241 cases, generated under ./data/ on first use; skipped with ``--quick``):
  the random baseline, a replay of it, the grounded stand-in with ``--grounded``.

It keeps each run's ``summary.json``, ``judgements.jsonl``, ``grounded.json``, ``grounded_cases.jsonl`` and
the ablation's ``ablation.json``, with the fields that name the code's version (``scored_with``) and the
run's own folders taken out; nothing else is touched.

    python bench/unchanged.py save DIR [--quick]    # before a change: the reference files
    python bench/unchanged.py check DIR [--quick]   # after it: the same bytes, or the files that differ

Exits non-zero when a file differs or is missing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import DATA_ROOT, full_set  # noqa: E402

KEPT = ("summary.json", "judgements.jsonl", "grounded.json", "grounded_cases.jsonl", "ablation.json")


def _u2eval(*args: str, cwd: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "u2eval", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode not in (0, 4):  # 4: a replay source missing answers is a result, not a failure
        raise SystemExit(f"u2eval {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")


def _runs(work: Path, quick: bool) -> list[tuple[str, Path]]:
    """Make the runs in ``work``; (name, folder) of each."""
    made = []

    def on(data: str, tag: str) -> None:
        random_run, replayed, grounded = work / f"{tag}-random", work / f"{tag}-replay", work / f"{tag}-grounded"
        _u2eval("run", "--model", "random", "--data", data, "--out", str(random_run), cwd=work)
        _u2eval("run", "--model", f"replay/{random_run}", "--data", data, "--out", str(replayed), cwd=work)
        _u2eval(
            "run", "--model", "grounded-standin/oracle", "--data", data, "--grounded", "--out", str(grounded), cwd=work
        )
        made.extend([(f"{tag}-random", random_run), (f"{tag}-replay", replayed), (f"{tag}-grounded", grounded)])

    on("sample", "sample")
    ablation = work / "sample-ablation"
    _u2eval(
        "ablate", "--model", "random", "--variants", "ours,ours-noanatomy", "--tasks", "dd,cve", "--out",
        str(ablation), cwd=work,
    )  # fmt: skip
    made.append(("sample-ablation", ablation))
    made += [(f"sample-ablation-{v}", ablation / v) for v in ("ours", "ours-noanatomy")]
    if not quick:
        on(str(full_set(DATA_ROOT)), "full")
    return made


def _normalised(path: Path, folders: list[Path]) -> bytes:
    """The file without its version fields (``scored_with``) and with the run folders' paths as placeholders."""
    text = path.read_text(encoding="utf-8")
    for number, folder in enumerate(sorted(folders, key=lambda f: -len(str(f)))):
        text = text.replace(str(folder), f"<run {number}>")
    if path.name == "summary.json":
        data = json.loads(text)
        data.pop("scored_with", None)
        text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    return text.encode("utf-8")


def collect(out: Path, quick: bool) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        runs = _runs(Path(tmp), quick)
        folders = [folder for _, folder in runs]
        files = {}
        for name, folder in runs:
            for kept in KEPT:
                if (folder / kept).is_file():
                    files[f"{name}/{kept}"] = _normalised(folder / kept, folders)
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("save", "check"))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--quick", action="store_true", help="the sample only (no full synthetic set)")
    args = parser.parse_args()
    files = collect(args.folder, args.quick)
    if args.action == "save":
        if args.folder.exists():
            shutil.rmtree(args.folder)
        for name, content in files.items():
            (args.folder / name).parent.mkdir(parents=True, exist_ok=True)
            (args.folder / name).write_bytes(content)
        print(f"saved {len(files)} files under {args.folder}")
        return 0
    saved = {p.relative_to(args.folder).as_posix(): p.read_bytes() for p in args.folder.rglob("*") if p.is_file()}
    if args.quick:
        saved = {k: v for k, v in saved.items() if k.startswith("sample-")}
    differ = sorted(k for k in saved.keys() & files.keys() if saved[k] != files[k])
    missing, extra = sorted(saved.keys() - files.keys()), sorted(files.keys() - saved.keys())
    for label, names in (("differ", differ), ("missing now", missing), ("new", extra)):
        for name in names:
            print(f"{label}: {name}")
    same = len(saved.keys() & files.keys()) - len(differ)
    print(f"{same} of {len(saved)} files byte-identical" + ("" if differ or missing or extra else ": unchanged"))
    return 1 if differ or missing or extra else 0


if __name__ == "__main__":
    raise SystemExit(main())
