"""Bad input: parsers fuzzed with generated answers, and a dataset with corrupt rows of every kind.

1. ``--answers`` answers (default 100,000) from a seeded generator: label words of every dataset, location
   words in every order and spelling, numbers (ranges, signs, units, 400 digits, inf, nan), refusals,
   markdown, quotes, control and non-Latin characters, lone surrogates, whitespace of every kind, empty
   strings, None and 10,000-character texts, joined at random. Each answer goes through every parser of
   both scoring modes, and through ``judge`` against a case of a random task. Promise: no exception, and
   every outcome valid: an ``ok`` option is one of the case's options, an ``ok`` location one of the 10, an
   ``ok`` number finite (or None where 'null' is allowed), ``ok`` text non-empty; anything else has no
   value; the reference stage (a) returns one of its options or ""; a reference number is finite or None;
   BLEU statistics and ROUGE-L stay in range.
2. A copy of the synthetic set with corrupt rows and files of every kind (bad base64, truncated PNG and
   JPEG, bytes that are no image, a bad options literal, options without the scenario's key, an unknown
   dataset id, a missing column, an empty file, commas instead of tabs, a row with one field too many, a
   byte that is not UTF-8, a header without rows), run through ``u2eval run --model random``. Promise:
   each reported once, by case id or file (and row), in manifest.json and summary.md, nothing else
   reported, and every other case judged exactly as in the run on the intact copy.

    python bench/bad_input.py [--answers 100000] [--seed 0] [--cases 200] [--quick]

Exits non-zero when a promise is broken.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import json
import math
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchlib import load_average, run_u2eval, synthetic_set, verdict

from u2eval.benchmark.sectors import LOCATION_OPTIONS
from u2eval.benchmark.tasks import DatasetSpec, TaskSpec, all_tasks
from u2eval.data.synth.rows import JPEG_IDS
from u2eval.records import CaseMeta, Completion
from u2eval.scoring.judging import judge
from u2eval.scoring.official import (
    reference_classification,
    reference_location_prediction,
    reference_number,
    reference_text,
)
from u2eval.scoring.official_options import reference_options, reference_stage_a_option
from u2eval.scoring.strict import Parsed, parse_location, parse_number, parse_option, parse_text
from u2eval.scoring.text_metrics import bleu_stats, rouge_l_case

# ------------------------------------------------------------------------------------- 1. the fuzzer

_NUMBERS = (
    "0", "7", "-3", "42.5", ".5", "5.", "1e308", "1e309", "-1e400", "inf", "-inf", "nan", "NaN", "1,5", "0,8",
    "40-45", "40 to 45", "45–50", "12.5%", "55 %", "5.5 cm", "3mm", "1/2", "½", "٣", "1" * 400, "9" * 40 + ".9",
    "-", "--5", "+5", "5e", "0x1F", "1_000",
)  # fmt: skip
_WORDS = (
    "upper", "lower", "top", "bottom", "left", "right", "center", "centre", "central", "middle", "mid",
    "not", "visible", "invisible", "absent", "none", "null", "N/A", "no", "non", "without", "other",
    "the", "a", "is", "lesion", "image", "shows", "likely", "definitely", "Answer:", "Caption:", "Report:",
)  # fmt: skip
_REFUSALS = (
    "I'm sorry, I can't help with that.", "As an AI, I cannot provide a diagnosis.", "I am unable to determine",
    "I cannot interpret medical images", "I\u2019m not able to", "Unable to assess.",
)  # fmt: skip
_NOISE = (
    "", " ", "\t", "\n", "\r\n", "\u00a0", "\u2028", "\u200b", "\x00", "\x1b[31m", "**", "`", "```", "#", ">", "'",
    '"', "(", ")", "[", "]", "{", "}", ",", ".", ";", ":", "!", "?", "-", "_", "/", "\\", "|", "😀", "中文",
    "مرحبا", "\u0301", "\ud800", "\udfff", "\ufffd", "\ufeff", "İ", "ß", "ﬁ",
)  # fmt: skip


class Fuzzer:
    """Seeded answers assembled from fragments that parsers look for, and from noise."""

    def __init__(self, seed: int, labels: list[str]) -> None:
        self.rng = random.Random(seed)
        self.labels = labels

    def fragment(self) -> str:
        rng = self.rng
        pick = rng.random()
        if pick < 0.30:
            text = rng.choice(self.labels)
        elif pick < 0.50:
            text = rng.choice(_WORDS)
        elif pick < 0.65:
            text = rng.choice(_NUMBERS)
        elif pick < 0.70:
            text = rng.choice(_REFUSALS)
        elif pick < 0.90:
            text = rng.choice(_NOISE)
        else:
            text = "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(1, 12)))
        roll = rng.random()
        if roll < 0.1:
            text = text.upper()
        elif roll < 0.15:
            text = f"**{text}**"
        elif roll < 0.2:
            text = text.replace(" ", rng.choice(("-", "_", "", "  ", "\n")))
        return text

    def answer(self) -> str | None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.01:
            return None
        if roll < 0.02:
            return ""
        if roll < 0.025:  # long: a report-length answer or a runaway generation
            return " ".join(self.fragment() for _ in range(rng.randrange(200, 2000)))[:10_000]
        separator = rng.choice((" ", " ", ", ", ". ", "\n", "", " or ", " and not "))
        return separator.join(self.fragment() for _ in range(rng.randrange(1, 7)))


def _valid_parsed(parsed: Parsed, ok_value: Callable[[object], bool]) -> bool:
    if parsed.outcome not in ("ok", "unparseable", "refused", "empty"):
        return False
    if parsed.outcome != "ok":
        return parsed.value is None
    return ok_value(parsed.value)


def _finite_or_none(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isfinite(value))


def check_answer(answer: str | None, case: CaseMeta, task: TaskSpec, ds: DatasetSpec) -> list[str]:
    """Every parser of both modes and ``judge`` on one answer; the broken promises (empty: all held)."""
    problems = []
    options = list(case.options) or list(ds.labels)
    if not _valid_parsed(parse_option(answer, options), lambda v: v in options):
        problems.append("parse_option")
    if not _valid_parsed(parse_location(answer), lambda v: v in LOCATION_OPTIONS):
        problems.append("parse_location")
    if not _valid_parsed(parse_number(answer), lambda v: v is not None and _finite_or_none(v)):
        problems.append("parse_number")
    if not _valid_parsed(parse_number(answer, nullable=True), _finite_or_none):
        problems.append("parse_number(nullable)")
    if not _valid_parsed(parse_text(answer), lambda v: isinstance(v, str) and bool(v.strip())):
        problems.append("parse_text")
    ref_options = reference_options(task.key, ds.id, anatomy=case.anatomy, channel=ds.channel or "")
    stage_a = reference_stage_a_option(answer, ref_options)
    if ref_options and stage_a.output not in (*ref_options, ""):
        problems.append("reference_stage_a_option")
    if task.capability == "classification":
        reference_classification(stage_a.output, case.truth, ds)
    if not isinstance(reference_location_prediction(stage_a.output), str):
        problems.append("reference_location_prediction")
    if not _finite_or_none(reference_number(answer, ds.id)):
        problems.append("reference_number")
    text = reference_text(answer)
    stats = bleu_stats(text, [case.truth or ""])
    if any(c > g for c, g in zip(stats.correct, stats.guess, strict=True)) or not 0 <= rouge_l_case(text, ["ref"]) <= 1:
        problems.append("bleu/rouge")
    judgement = judge(case, Completion(case_id=case.case_id, key="k", text=answer), task)
    if judgement.outcome not in ("ok", "unparseable", "refused", "empty"):
        problems.append("judge outcome")
    return problems


def sample_cases(folder: Path) -> list[tuple[CaseMeta, TaskSpec, DatasetSpec]]:
    tasks = {t.key: t for t in all_tasks()}
    cases = []
    with (folder / "cases.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            meta = CaseMeta.model_validate(json.loads(line)["case"])
            task = tasks[meta.task]
            cases.append((meta, task, task.dataset(meta.dataset_id)))
    return cases


def fuzz(n: int, seed: int, cases: list[tuple[CaseMeta, TaskSpec, DatasetSpec]]) -> tuple[int, Counter[str], float]:
    """(answers checked, broken promises by parser, seconds); exceptions count as broken promises."""
    labels = sorted({label for t in all_tasks() for d in t.datasets for label in d.labels} | set(LOCATION_OPTIONS))
    fuzzer = Fuzzer(seed, labels)
    rng = random.Random(seed + 1)
    broken: Counter[str] = Counter()
    examples: dict[str, str | None] = {}
    started = time.perf_counter()
    for _ in range(n):
        answer = fuzzer.answer()
        case, task, ds = rng.choice(cases)
        try:
            problems = check_answer(answer, case, task, ds)
        except Exception as exc:  # noqa: BLE001 - an exception is what the fuzzer looks for
            problems = [f"exception {type(exc).__name__}: {exc}"[:120]]
        for problem in problems:
            broken[problem] += 1
            examples.setdefault(problem, answer)
    for problem, answer in examples.items():
        print(f"   broken: {problem} on {answer!r:.200}")
    return n, broken, time.perf_counter() - started


# ---------------------------------------------------------------------------------- 2. corrupt data


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    csv.field_size_limit(sys.maxsize)
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, dialect="excel-tab")
        return next(reader), list(reader)


def _write(path: Path, header: list[str], rows: list[list[str]], delimiter: str = "\t") -> None:
    # surrogateescape: a cell may carry a byte that is not UTF-8 ("\udcff" is written as 0xff)
    with path.open("w", encoding="utf-8", errors="surrogateescape", newline="") as handle:
        writer = csv.writer(handle, dialect="excel-tab", delimiter=delimiter, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _sha8(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:8]


class Corrupter:
    """Breaks rows and files of a copy of the set, recording where -> (reason fragment, rows removed)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.expected: dict[str, str] = {}
        self.removed: set[tuple[str, str, int]] = set()  # (task folder, file stem, row) no longer judged

    def row_error(self, task: str, rel: str, row: int, column: str, value: str, fragment: str) -> None:
        """A bad cell; reported by case id, or by file:row when the image cannot be decoded."""
        header, rows = _rows(self.root / rel)
        image = base64.b64decode(rows[row][header.index("img_data")])
        rows[row][header.index(column)] = value
        _write(self.root / rel, header, rows)
        if column == "img_data":
            try:
                image = base64.b64decode(value, validate=True)
            except ValueError:
                image = b""
        where = f"{task}/{Path(rel).stem}/{row}/{_sha8(image)}" if image else f"{rel}:{row}"
        self.expected[where] = fragment
        self.removed.add((rel.split("/")[0], Path(rel).stem, row))

    def file_error(
        self, rel: str, fragment: str, rewrite: Callable[[Path, list[str], list[list[str]]], object]
    ) -> None:
        header, rows = _rows(self.root / rel)
        rewrite(self.root / rel, header, rows)
        self.expected[rel] = fragment
        self.removed.update((rel.split("/")[0], Path(rel).stem, i) for i in range(len(rows)))


def corrupt(root: Path) -> Corrupter:
    c = Corrupter(root)
    c.row_error("dd", "disease_diagnosis/21.tsv", 1, "img_data", "not-base64!", "not base64")
    header, rows = _rows(root / "lesion_localisation/04.tsv")
    png = base64.b64decode(rows[2][header.index("img_data")])
    c.row_error(
        "ll", "lesion_localisation/04.tsv", 2, "img_data", base64.b64encode(png[: len(png) // 2]).decode(), "PNG"
    )
    jpeg_id = sorted(JPEG_IDS & {p.stem for p in (root / "disease_diagnosis").glob("*.tsv")})[0]
    rel = f"disease_diagnosis/{jpeg_id}.tsv"
    header, rows = _rows(root / rel)
    jpeg = base64.b64decode(rows[0][header.index("img_data")])
    c.row_error("dd", rel, 0, "img_data", base64.b64encode(jpeg[: len(jpeg) * 2 // 3]).decode(), "end-of-image")
    html = base64.b64encode(b"<html>not an image</html>").decode()
    c.row_error("vra", "view_recognition_and_assessment/03.tsv", 0, "img_data", html, "not a PNG, JPEG")
    bad_literal = "{'view': ['a', 'b'"
    c.row_error("vra", "view_recognition_and_assessment/37.tsv", 3, "options", bad_literal, "not a Python literal")
    c.row_error("dd", "disease_diagnosis/40.tsv", 1, "options", "{'BI-RADS': ['2', '3']}", "no key")
    c.row_error("od", "organ_detection/09.tsv", 0, "dataset_name", "99.Unknown_Source", "unknown dataset id")

    def drop_measurement(path: Path, header: list[str], rows: list[list[str]]) -> None:
        at = header.index("measurement")
        _write(path, header[:at] + header[at + 1 :], [r[:at] + r[at + 1 :] for r in rows])

    c.file_error("clinical_value_estimation/27.tsv", "missing column(s) measurement", drop_measurement)
    c.file_error("organ_detection/13.tsv", "empty file", lambda p, h, r: p.write_text(""))
    c.file_error("lesion_localisation/17_1.tsv", "not tab-separated", lambda p, h, r: _write(p, h, r, ","))
    c.file_error("keypoint_detection/48.tsv", "no data rows", lambda p, h, r: _write(p, h, []))

    header, rows = _rows(root / "caption_generation/10.tsv")
    rows[2].append("one too many")
    _write(root / "caption_generation/10.tsv", header, rows)
    c.expected["caption_generation/10.tsv:2"] = f"{len(header) + 1} fields, the header has {len(header)}"
    c.removed.add(("caption_generation", "10", 2))

    rel = "report_generation/39.tsv"
    header, rows = _rows(root / rel)
    prompt = "\udcff" + rows[1][header.index("prompt")]  # a 0xff byte, as a file from another encoding has
    c.row_error("rg", rel, 1, "prompt", prompt, "column prompt is not valid UTF-8")
    return c


def judged(folder: Path) -> dict[tuple[str, str, int], dict[str, Any]]:
    """(task folder, file stem, row) -> judgement of a run folder."""
    cases = {}
    with (folder / "cases.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            case = json.loads(line)["case"]
            cases[case["case_id"]] = (
                case["source_file"].split("/")[0],
                Path(case["source_file"]).stem,
                case["row_index"],
            )
    with (folder / "judgements.jsonl").open(encoding="utf-8") as handle:
        return {cases[j["case_id"]]: j for j in map(json.loads, handle)}


def corrupt_run(data: Path, tmp: Path) -> list[tuple[str, bool]]:
    intact, broken = tmp / "intact", tmp / "broken"
    shutil.copytree(data, intact)
    shutil.copytree(data, broken)
    corrupter = corrupt(broken)
    runs = {}
    for name, folder in (("intact", intact), ("broken", broken)):
        outcome = run_u2eval([sys.executable, "-m", "u2eval", "run", "--model", "random", "--data", str(folder),
                              "--out", str(tmp / f"run-{name}")])  # fmt: skip
        if outcome.returncode != 0:
            raise SystemExit(f"u2eval run on the {name} copy failed: {outcome.stderr[-2000:]}")
        runs[name] = tmp / f"run-{name}"
    reported = json.loads((runs["broken"] / "manifest.json").read_text(encoding="utf-8"))["data_errors"]
    summary_md = (runs["broken"] / "summary.md").read_text(encoding="utf-8")
    by_where = {r.split(": ", 1)[0]: r for r in reported}
    print(f"   {len(corrupter.expected)} corruptions, {len(reported)} reported:")
    for where, fragment in corrupter.expected.items():
        print(f"     {'ok ' if fragment in by_where.get(where, '') else 'MISSING'} {by_where.get(where, where)}")
    for extra in set(by_where) - set(corrupter.expected):
        print(f"     EXTRA {by_where[extra]}")
    intact_judged, broken_judged = judged(runs["intact"]), judged(runs["broken"])
    expected_keys = set(intact_judged) - corrupter.removed
    same = all(broken_judged.get(k) == intact_judged[k] for k in expected_keys)
    print(
        f"   judged: {len(broken_judged)} of {len(intact_judged)} cases ({len(corrupter.removed)} rows broken); "
        f"every other case judged as on the intact copy: {same and set(broken_judged) == expected_keys}"
    )
    return [
        ("every corruption reported once, by case id or file", len(reported) == len(corrupter.expected)
         and all(f in by_where.get(w, "") for w, f in corrupter.expected.items())),
        ("summary.md lists every corruption", all(w in summary_md for w in corrupter.expected)),
        ("every other case judged, as on the intact copy", set(broken_judged) == expected_keys and same),
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--answers", type=int, default=100_000, help="generated answers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", type=int, default=200, help="size of the corrupted set (a multiple of 200)")
    parser.add_argument("--quick", action="store_true", help="10,000 answers (the smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.answers = 10_000
    data = synthetic_set(args.cases)
    print(f"bad input: load {load_average()}")
    with tempfile.TemporaryDirectory(prefix="u2eval-bad-input-") as tmp_name:
        tmp = Path(tmp_name)
        print("\n2. a dataset with corrupt rows and files:")
        checks = corrupt_run(data, tmp)
        print(f"\n1. parsers fuzzed with {args.answers:,} generated answers (seed {args.seed}):")
        n, broken, seconds = fuzz(args.answers, args.seed, sample_cases(tmp / "run-intact"))
        print(f"   {n:,} answers in {seconds:.1f} s ({seconds / n * 1e6:.0f} us each); broken promises: {dict(broken)}")
        checks.insert(0, (f"{n:,} fuzzed answers: no exception, every outcome valid", not broken and n >= args.answers))
    return verdict(checks)


if __name__ == "__main__":
    sys.exit(main())
