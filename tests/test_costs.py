"""What a run costs, before it is sent: the providers' image-token rules, list prices, and `u2eval run --dry-run`."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from openai_server import OpenAIServer

from u2eval.benchmark.tasks import select_tasks
from u2eval.data.reader import iter_cases
from u2eval.data.sources import resolve_source
from u2eval.errors import ConfigError
from u2eval.models.image_tokens import anthropic_tokens, gemini_tokens, image_tokens, rule_for
from u2eval.models.pricing import Price, parse_price
from u2eval.records import Usage
from u2eval.run.estimate import estimate_run
from u2eval.run.options import RunOptions


@pytest.mark.parametrize(
    ("model", "size", "detail", "tokens"),
    [
        ("gpt-4o-2024-08-06", (1024, 1024), "high", 765),  # OpenAI's own worked examples
        ("gpt-4o-2024-08-06", (2048, 4096), "high", 1105),
        ("gpt-4o-2024-08-06", (4096, 8192), "low", 85),
        ("gpt-4o-2024-08-06", (128, 64), "high", 255),  # small images are not scaled up: one tile
        ("gpt-4o-mini-2024-07-18", (1024, 1024), "high", 2833 + 4 * 5667),
        ("gpt-5-2025-08-07", (1024, 1024), "high", 70 + 4 * 140),
    ],
)
def test_openai_tiles(model: str, size: tuple[int, int], detail: str, tokens: int) -> None:
    assert image_tokens("openai-tiles", model, *size, detail) == tokens


def test_anthropic_and_gemini_rules() -> None:
    assert anthropic_tokens(1000, 1000) == math.ceil(1_000_000 / 750)
    # 2000 x 2000 shrinks to fit 1.15 megapixels (1072 x 1072) before it is counted
    assert anthropic_tokens(2000, 2000) == math.ceil(1072 * 1072 / 750)
    assert anthropic_tokens(3000, 200) == math.ceil(1568 * 104 / 750)  # the 1568-pixel long edge
    assert gemini_tokens(384, 384) == 258 and gemini_tokens(385, 100) == 258
    assert gemini_tokens(1000, 500) == 2 * 258 and gemini_tokens(1600, 1600) == 9 * 258
    assert rule_for("anthropic", "x") == "anthropic" and rule_for("google", "g") == "gemini"
    assert rule_for("openai", "gpt-4o") == "openai-tiles" and rule_for("openai", "Qwen/Qwen2.5-VL") == "qwen-vl"
    with pytest.raises(ConfigError, match="unknown image_tokens rule"):
        rule_for("openai", "gpt-4o", "tiles")


def test_prices_live_batch_and_cached() -> None:
    price = Price(input=2.5, output=10, cached_input=1.25, batch_input=1.25, batch_output=5)
    assert price.cost(1_000_000, 1_000_000) == pytest.approx(12.5)
    assert price.cost(1_000_000, 1_000_000, batch=True) == pytest.approx(6.25)
    assert price.cost(1_000_000, 0, cached_tokens=400_000) == pytest.approx(0.6 * 2.5 + 0.4 * 1.25)
    assert price.usage_cost(Usage(input_tokens=2000, output_tokens=100)) == pytest.approx((2000 * 2.5 + 1000) / 1e6)
    assert price.usage_cost(Usage()) is None
    with pytest.raises(ValueError, match="no batch price"):
        Price(input=1, output=2).cost(1, 1, batch=True)
    given = parse_price("in=3,out=15,batch_in=1.5,batch_out=7.5")
    assert (given.input, given.output, given.batch_output, given.source) == (3, 15, 7.5, "--price")
    for bad in ("in=3", "in=3,out=x", "input=3,out=1", "in=-1,out=2"):
        with pytest.raises(ConfigError, match="--price"):
            parse_price(bad)


def _sizes(tasks: tuple[str, ...], limit: int) -> list[tuple[str, int, int]]:
    chosen = select_tasks(list(tasks))
    return [
        (c.task, c.image_width, c.image_height)
        for c in iter_cases(resolve_source("sample", tasks=chosen), chosen, on_error=print, limit=limit)
    ]


def test_the_estimate_counts_every_case_and_its_image_as_the_provider_would() -> None:
    estimate = estimate_run(RunOptions(model="gpt-4o", tasks=("dd", "ll"), limit=2))
    sizes = _sizes(("dd", "ll"), 2)
    total = estimate.total
    assert total.cases == total.requests == total.images == len(sizes)  # no two prompts alike here
    assert total.image_tokens == sum(image_tokens("openai-tiles", "gpt-4o-2024-08-06", w, h) for _, w, h in sizes)
    assert total.pixels == sum(w * h for _, w, h in sizes) and total.resized == 0
    assert total.output_max == 1024 * len(sizes)
    assert estimate.price is not None and estimate.price.as_of
    cost = estimate.price.cost(total.input_tokens, total.output_tokens)
    assert total.cost(estimate.price) == pytest.approx(cost)
    assert total.cost(estimate.price, batch=True) == pytest.approx(cost / 2)  # OpenAI's batch: half the price
    # The same cases without images (a text-only control) cost their text alone.
    text = estimate_run(RunOptions(model="gpt-4o", tasks=("dd", "ll"), limit=2, control="text-only")).total
    assert text.images == 0 and text.image_tokens == 0 and text.cases == total.cases
    assert text.requests < text.cases  # without the image, a dataset's cases ask the same thing


def test_an_image_budget_is_applied_before_the_tokens_are_counted(tmp_path: Path) -> None:
    preset = tmp_path / "small.yaml"
    preset.write_text(
        "name: small\nadapter: anthropic\nmodel: claude-x\nextra: {image_budget: {max_long_edge: 100}}\n"
        "price: {input: 3, output: 15}\n",
        encoding="utf-8",
    )
    estimate = estimate_run(RunOptions(model=str(preset), tasks=("dd",), limit=2))
    sizes = _sizes(("dd",), 2)
    assert estimate.rule == "anthropic" and estimate.total.resized == sum(max(w, h) > 100 for _, w, h in sizes) > 0
    fitted = [(w, h) if max(w, h) <= 100 else (100, round(h * 100 / w)) if w >= h else (round(w * 100 / h), 100)
              for _, w, h in sizes]  # fmt: skip
    assert estimate.total.pixels == pytest.approx(sum(w * h for w, h in fitted), rel=0.02)
    assert estimate.total.image_tokens == pytest.approx(sum(math.ceil(w * h / 750) for w, h in fitted), rel=0.05)
    assert estimate.total.cost(estimate.price, batch=True) is None  # no batch price given


def test_dry_run_sends_nothing_writes_nothing_and_says_it_is_an_estimate(tmp_path: Path) -> None:
    server = OpenAIServer(models=("gpt-4o-2024-08-06",)).start()
    try:
        env = {**os.environ, "OPENAI_BASE_URL": server.url, "COLUMNS": "220"}
        env.pop("OPENAI_API_KEY", None)  # a dry run needs no key
        command = [sys.executable, "-m", "u2eval", "run", "--model", "gpt-4o", "--tasks", "dd", "--limit", "2"]
        command += ["--out", str(tmp_path / "run"), "--dry-run"]
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert server.requests == [] and not (tmp_path / "run").exists() and not (tmp_path / "results").exists()
        assert "Estimate (nothing sent)" in done.stdout and "nothing was sent" in done.stdout
        assert "as of 2025-08" in done.stdout and "batch $1.25 / $5" in done.stdout
        priced = subprocess.run(
            [*command, "--price", "in=1,out=2"], capture_output=True, text=True, env=env, check=False
        )
        assert "prices $1 / $2 per million tokens" in priced.stdout and "no batch price" in priced.stdout
        unpriced = subprocess.run(
            [sys.executable, "-m", "u2eval", "run", "--model", "random", "--tasks", "dd", "--limit", "1", "--dry-run"],
            capture_output=True, text=True, env=env, check=False, cwd=tmp_path,
        )  # fmt: skip
        assert unpriced.returncode == 0 and "no price is known for this model" in unpriced.stdout
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------- after a run


def _stored(folder: Path) -> list[dict[str, object]]:
    import json

    return [json.loads(line) for line in (folder / "responses.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture
def gpt4o(monkeypatch: pytest.MonkeyPatch) -> object:
    server = OpenAIServer(api_key="sk-test-key", models=("gpt-4o-2024-08-06",)).start()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key")
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    yield server
    server.stop()


def test_a_run_says_what_its_answers_cost_beside_the_estimate(gpt4o: OpenAIServer, tmp_path: Path) -> None:
    import json

    from u2eval.run.runner import run

    options = RunOptions(model="gpt-4o", tasks=("dd", "rg"), limit=2, out=tmp_path / "run")
    result = run(options)
    price = Price(input=2.5, output=10, cached_input=1.25, batch_input=1.25, batch_output=5)
    by_hand = sum(
        price.cost(r["usage"]["input_tokens"], r["usage"]["output_tokens"])  # type: ignore[index]
        for r in _stored(tmp_path / "run")
    )
    cost = result.summary.cost
    assert cost is not None and cost.total.cost_usd == pytest.approx(by_hand, abs=1e-6)
    assert cost.total.reporting == cost.total.answers == result.summary.n_judgements
    estimate = estimate_run(options)
    assert cost.total.estimated_input_tokens == estimate.total.input_tokens  # the dry run's estimate, exactly
    assert cost.total.estimated_usd == pytest.approx(estimate.total.cost(estimate.price), abs=1e-6)
    assert cost.total.estimate_off == pytest.approx((cost.total.estimated_usd - by_hand) / by_hand, abs=1e-3)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["cost_usd"] == cost.total.cost_usd and manifest["price"]["as_of"] == "2025-08"
    markdown = (tmp_path / "run" / "summary.md").read_text()
    assert "## Cost" in markdown and "estimate off by" in markdown
    # Re-scoring the folder alone (no model, no preset) reproduces it from the manifest.
    before = (tmp_path / "run" / "summary.json").read_bytes()
    from u2eval.run.scoring_pass import score_folder

    score_folder(tmp_path / "run")
    assert (tmp_path / "run" / "summary.json").read_bytes() == before


def test_max_cost_stops_before_the_budget_is_passed_and_a_higher_one_goes_on(
    gpt4o: OpenAIServer, tmp_path: Path
) -> None:
    base = [sys.executable, "-m", "u2eval", "run", "--model", "gpt-4o", "--tasks", "dd,ll", "--limit", "3"]
    base += ["--out", str(tmp_path / "run"), "--concurrency", "2"]
    env = {**os.environ, "COLUMNS": "200"}
    price = Price(input=2.5, output=10)
    done = subprocess.run([*base, "--max-cost", "0.06"], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 3 and "--max-cost budget ($0.06) was reached" in done.stdout + done.stderr
    stored = _stored(tmp_path / "run")
    answered = [r for r in stored if r.get("error") is None]
    not_asked = [r for r in stored if r.get("error") == "budget"]
    spent = sum(price.cost(r["usage"]["input_tokens"], r["usage"]["output_tokens"]) for r in answered)  # type: ignore[index]
    assert answered and not_asked and spent <= 0.06
    assert len(gpt4o.case_requests()) == len(answered)  # not asked means never sent
    done = subprocess.run([*base, "--max-cost", "5"], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert len(gpt4o.case_requests()) == len(answered) + len(not_asked)  # only those the budget held back
    unpriced = subprocess.run(
        [sys.executable, "-m", "u2eval", "run", "--model", "random", "--tasks", "dd", "--limit", "1", "--max-cost", "1",
         "--out", str(tmp_path / "r")], capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert unpriced.returncode == 2 and "--max-cost needs" in unpriced.stderr


def test_the_budget_never_lets_spent_plus_in_flight_pass_it() -> None:
    from u2eval.models.protocol import ModelRequest
    from u2eval.records import Case, Completion
    from u2eval.run.budget import CostBudget

    def request(i: int) -> ModelRequest:
        case = Case(f"c{i}", "dd", "21", "d", "f", i, "breast", "", "benign", ("benign",), b"", "png")
        return ModelRequest(key=f"k{i}", case=case, prompt=None)  # type: ignore[arg-type]

    price = Price(input=1, output=1)
    budget = CostBudget(1.0, price, ceiling=lambda r: 0.3, spent_usd=0.05)
    batches = [[request(i)] for i in range(5)]
    assert [budget.reserve(b) for b in batches[:3]] == [True, True, True]  # 0.05 + 0.9 <= 1
    assert not budget.reserve(batches[3]) and budget.stopped and budget.not_asked == 1
    used = Completion(case_id="c0", key="k0", text="x", usage=Usage(input_tokens=50_000, output_tokens=50_000))
    budget.settle(batches[0], [used])
    assert budget.spent_usd == pytest.approx(0.15) and budget.reserved_usd == pytest.approx(0.6)
    assert not budget.reserve(batches[4])  # once stopped, stopped: the run ends cleanly
    refused = budget.refusal(batches[4])
    assert refused[0].error == "budget" and refused[0].is_infra_error and "$1.00" in (refused[0].error_message or "")


def test_the_leaderboard_gives_each_runs_cost(gpt4o: OpenAIServer, tmp_path: Path) -> None:
    from u2eval.reports.leaderboard import BoardOptions, build_board
    from u2eval.reports.leaderboard_text import render_csv, render_markdown
    from u2eval.run.runner import run

    priced = run(RunOptions(model="gpt-4o", tasks=("dd",), limit=1, out=tmp_path / "runs" / "gpt-4o"))
    run(RunOptions(model="random", tasks=("dd",), limit=1, out=tmp_path / "runs" / "random"))
    board = build_board([tmp_path / "runs"], BoardOptions(resamples=20))
    costs = {row.model.split("/")[0]: row.cost_usd for row in board.rows}
    assert priced.summary.cost is not None
    assert costs == {"openai": priced.summary.cost.total.cost_usd, "random": None}
    assert "cost (USD)" in render_markdown(board) and "cost_usd" in render_csv(board).splitlines()[0]


def test_identical_prompts_are_one_request_as_the_run_asks_them(tmp_path: Path) -> None:
    import json

    from u2eval.run.runner import run

    # A grey image of each case's size in its image's place: many cases send the same request.
    options = RunOptions(model="random", tasks=("dd", "od"), limit=3, control="no-image")
    estimate = estimate_run(options).total
    run(RunOptions(model="random", tasks=("dd", "od"), limit=3, control="no-image", out=tmp_path / "run"))
    lines = (tmp_path / "run" / "cases.jsonl").read_text().splitlines()
    keys = {json.loads(line)["key"] for line in lines}
    assert estimate.cases == len(lines) and estimate.requests == len(keys) < len(lines)
