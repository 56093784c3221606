"""Faults: the same run against a server that fails at set rates; what is retried, what is kept, what is lost.

Against the OpenAI stand-in in its own process (tests/openai_server.py), on the synthetic set scaled to
``--cases``, with ``u2eval run --max-attempts 4 --timeout 2``. The server's fault plan is decided per case
(its image) and attempt by a seeded hash, so a case meets the same faults whatever the concurrency:

- transient, on each of a case's first 2 attempts: 429 with Retry-After 1 s, 500, 503, a hang past the
  client's timeout, malformed JSON (a body cut in half), a dropped connection;
- persistent: 2% of the cases fail their first 4 attempts with 503 (an outage longer than a run's retries);
- the model's own answers: refusals and empty content (answers, not faults: stored, scored wrong, never
  retried).

Run 1 must complete with exactly the persistent cases as infra errors (exit 3), which never enter a score
(every dataset's denominator is the fault-free run's less exactly those cases); every other case answered
within 4 attempts; every Retry-After waited (the next attempt arrives no sooner, and at most 5% + 0.25 s
later); refusals and empty answers asked once. Run 2, the same command, asks only for the persistent cases
and ends with 0 infra errors and summary.json, summary.md and judgements.jsonl byte-identical to a run
against a server that only refuses and answers empty (no faults). Prints the counts per kind: injected by
the server, retried by the client, final outcomes.

    python bench/faults.py [--cases 2000] [--concurrency 32] [--seed 0] [--quick]

Exits non-zero when a promise is broken.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from benchlib import Server, load_average, run_command, run_u2eval, same_files, stored_answer, synthetic_set, verdict

MAX_ATTEMPTS = 4
TIMEOUT_S = 2.0
RETRY_AFTER_S = 1.0
LATENCY_S = 0.02
TRANSIENT = {
    "rate_limit": 0.04,
    "server_error": 0.03,
    "overloaded": 0.03,
    "hang": 0.02,
    "malformed": 0.02,
    "drop": 0.01,
}
ANSWERS = {"refusal": 0.02, "empty_content": 0.02}
PERSISTENT_RATE = 0.02
EXIT_INFRA = 3


def plan(seed: int, faults: bool) -> dict[str, Any]:
    answers_only: dict[str, Any] = {"answers": ANSWERS, "seed": seed}
    if not faults:
        return answers_only
    return answers_only | {
        "transient": TRANSIENT,
        "transient_attempts": 2,
        "persistent_rate": PERSISTENT_RATE,
        "persistent_kind": "overloaded",
        "persistent_attempts": MAX_ATTEMPTS,
        "retry_after_s": RETRY_AFTER_S,
        "hang_s": TIMEOUT_S + 3,
    }


def judgements(folder: Path) -> dict[str, dict[str, Any]]:
    with (folder / "judgements.jsonl").open(encoding="utf-8") as handle:
        return {j["case_id"]: j for j in map(json.loads, handle)}


def counted_per_dataset(folder: Path, mode: str) -> dict[tuple[str, str], int]:
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    return {(d["task"], d["dataset_id"]): d["n_counted"] for d in summary["modes"][mode]["datasets"]}


def never_scored(run: Path, clean: Path, infra: set[str]) -> bool:
    """Each dataset's denominator in ``run`` is the clean run's less exactly its infra-error cases that the
    clean run counted, in both modes."""
    clean_judged = judgements(clean)
    for mode in ("strict", "reference"):
        expected = Counter[tuple[str, str]]()
        for key, n in counted_per_dataset(clean, mode).items():
            expected[key] = n
        for case_id in infra:
            j = clean_judged[case_id]
            if j[mode]["counted"]:
                expected[(j["task"], j["dataset_id"])] -= 1
        if counted_per_dataset(run, mode) != dict(expected):
            return False
    return True


def retry_after_gaps(entries: list[dict[str, Any]]) -> list[float]:
    """For every 429, the time to the next attempt of that case over the Retry-After it carried."""
    by_image: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in entries:
        by_image[entry["image"]].append(entry)
    ratios = []
    for attempts in by_image.values():
        attempts.sort(key=lambda e: e["attempt"])
        for this, following in zip(attempts, attempts[1:], strict=False):
            if this["fault"] == "rate_limit":
                ratios.append((following["arrived"] - this["ended"]) / this["retry_after_s"])
    return ratios


def main() -> int:  # noqa: PLR0915 - the scenario reads top to bottom, printed as it goes
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=2000, help="requests of the run (a multiple of 200)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault plan")
    parser.add_argument("--quick", action="store_true", help="200 cases (the smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.cases, args.concurrency = 200, 16
    data = synthetic_set(args.cases)
    print(f"faults: {args.cases} cases from {data}, concurrency {args.concurrency}; load {load_average()}")
    extra = ["--max-attempts", str(MAX_ATTEMPTS), "--timeout", str(TIMEOUT_S)]
    server = Server()
    try:
        with tempfile.TemporaryDirectory(prefix="u2eval-faults-") as tmp_name:
            tmp = Path(tmp_name)
            clean, faulty = tmp / "clean", tmp / "faulty"
            server.reset(latency_s=LATENCY_S, answers="varied", plan=plan(args.seed, faults=False))
            reference = run_u2eval(run_command(clean, data, server, concurrency=args.concurrency, extra=extra))
            if reference.returncode != 0:
                raise SystemExit(f"the fault-free run failed: {reference.stderr[-2000:]}")

            server.reset(latency_s=LATENCY_S, answers="varied", plan=plan(args.seed, faults=True))
            command = run_command(faulty, data, server, concurrency=args.concurrency, extra=extra)
            first = run_u2eval(command)
            log1 = server.settle()
            stats1 = server.call("/_stats")
            manifest1 = json.loads((faulty / "manifest.json").read_text(encoding="utf-8"))
            judged1 = judgements(faulty)
            infra1 = {c for c, j in judged1.items() if j["outcome"] == "infra_error"}
            persistent = {e["image"][:8] for e in log1 if e["persistent"]}
            infra_images = {c.rsplit("/", 1)[1] for c in infra1}
            attempts = Counter(e["image"] for e in log1)
            answered_once = {e["image"] for e in log1 if e["fault"] in ANSWERS}
            gaps = retry_after_gaps(log1)
            outcomes1 = Counter(j["outcome"] for j in judged1.values())
            scored_ok = never_scored(faulty, clean, infra1)

            start = len(server.fetch_log())
            second = run_u2eval(command)
            log2 = server.settle()[start:]
            outcomes2 = Counter(j["outcome"] for j in judgements(faulty).values())
            asked2 = {e["image"][:8] for e in log2}
            differs = same_files(clean, faulty)
    finally:
        server.stop()

    dispatch = manifest1["dispatch"]
    print(f"\nrun 1: exit {first.returncode}, {first.seconds:.1f} s, {len(log1)} requests for {len(judged1)} cases")
    injected = stats1["faults"]
    print("  injected by the server (requests):")
    for kind in (*TRANSIENT, *ANSWERS):
        note = " (persistent included)" if kind == "overloaded" else ""
        print(f"  {kind:>16} {injected.get(kind, 0):>6}{note}")
    retried = {k.split(".", 1)[1]: v for k, v in dispatch.items() if k.startswith("retries.")}
    final = {k.split(".", 1)[1]: v for k, v in dispatch.items() if k.startswith("errors.")}
    print(f"  retried by the client (attempts, by the kind it saw): {dict(sorted(retried.items()))}")
    print(f"  final per case: {dict(sorted(final.items()))}; outcomes {dict(sorted(outcomes1.items()))}")
    print(
        f"  retries {dispatch['retries']}; attempts per case: max {max(attempts.values())} (limit {MAX_ATTEMPTS}); "
        f"persistent cases {len(persistent)}, infra errors {len(infra1)}"
    )
    low, high = (min(gaps), max(gaps)) if gaps else (float("nan"), float("nan"))
    print(f"  Retry-After: {len(gaps)} waits, next attempt after {low:.3f}-{high:.3f} x the time told")
    print(
        f"  Retry-After told {dispatch['retry_after_ms'] / 1000:.1f} s in all; waits before retries, backoff "
        f"included: {dispatch['retry_wait_ms'] / 1000:.1f} s"
    )
    print(
        f"run 2: exit {second.returncode}, {second.seconds:.1f} s, {len(log2)} requests for {len(asked2)} cases; "
        f"outcomes {dict(sorted(outcomes2.items()))}; differs from the fault-free run: {differs or 'none'}"
    )
    tolerance = RETRY_AFTER_S * 0.05 + 0.25
    return verdict(
        [
            ("run 1 completes; exit 3 (infra errors)", first.returncode == EXIT_INFRA and len(judged1) == args.cases),
            ("run 1: infra errors are exactly the persistent cases", infra_images == persistent and bool(persistent)),
            ("every case asked at most --max-attempts times", max(attempts.values()) <= MAX_ATTEMPTS),
            ("every transient fault retried to an answer", outcomes1["infra_error"] == len(persistent)),
            ("Retry-After waited, never less (+5% and 0.25 s scheduling at most)", bool(gaps)
             and min(gaps) >= 0.99 and max(gaps) * RETRY_AFTER_S <= RETRY_AFTER_S + tolerance),
            ("refusals and empty answers stored, asked once", all(attempts[i] == 1 for i in answered_once)
             and outcomes1["refused"] > 0 and outcomes1["empty"] > 0),
            ("infra errors never scored (denominators less exactly them)", scored_ok),
            ("run 2 asks only the persistent cases", asked2 == persistent and all(stored_answer(e) for e in log2)),
            ("run 2: 0 infra errors, exit 0", second.returncode == 0 and outcomes2["infra_error"] == 0),
            ("run 2: summary and judgements byte-identical to the fault-free run", not differs),
        ]
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
