"""Prompt rendering speed: every case of the bundled sample rendered with the default prompt, the cases read
once; the time per case over several repetitions: min / median / max. Target: a median under 1 ms a case
(a run renders each case once, beside a model call that takes seconds; 7,241 cases then cost under 8 s).

    python bench/render.py [--repeat 7] [--rounds 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

from u2eval.benchmark.prompts import default_library
from u2eval.benchmark.tasks import get_task, select_tasks
from u2eval.data.reader import iter_cases
from u2eval.data.sources import resolve_source

TARGET_S = 1e-3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=20, help="renders of every case per repetition")
    args = parser.parse_args()
    tasks = select_tasks(None)
    cases = list(iter_cases(resolve_source("sample", tasks=tasks), tasks, on_error=print))
    library = default_library()
    for case in cases:  # templates compiled once per process, before timing
        library.render(case, get_task(case.task))
    per_case = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        for _ in range(args.rounds):
            for case in cases:
                library.render(case, get_task(case.task))
        per_case.append((time.perf_counter() - started) / (args.rounds * len(cases)))
    median = statistics.median(per_case)
    print(
        f"render: {len(cases)} cases x {args.rounds} rounds, per case min {min(per_case) * 1e6:.0f} us, "
        f"median {median * 1e6:.0f} us, max {max(per_case) * 1e6:.0f} us (target median <= {TARGET_S * 1e6:.0f} us)"
    )
    return 0 if median <= TARGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
