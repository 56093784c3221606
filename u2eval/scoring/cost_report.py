"""What a run cost, in summary.md and on the terminal: a pure rendering of summary.json's ``cost``."""

from __future__ import annotations

from u2eval.scoring.cost_records import CostSummary, TaskCost
from u2eval.scoring.summary import Summary


def usd(value: float | None) -> str:
    """Dollars as a reader wants them: cents, or four places below a dollar (a sample run costs fractions)."""
    if value is None:
        return "–"
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


def _off(value: float | None) -> str:
    return "–" if value is None else f"{value:+.0%}"


def _price_line(cost: CostSummary) -> str:
    price = cost.price
    batch = (
        f"; batch ${price['batch_input']:g} / ${price['batch_output']:g}"
        if price.get("batch_input") is not None and price.get("batch_output") is not None
        else ""
    )
    when = f", as of {price['as_of']}" if price.get("as_of") else ""
    source = f" ({price['source']})" if price.get("source") else ""
    return f"${price['input']:g} / ${price['output']:g} per million tokens in / out{batch}{when}{source}"


def _row(t: TaskCost) -> str:
    name = "**total**" if t.task == "total" else t.task.upper()
    tokens_in = f"{t.input_tokens:,}" + (f" ({t.cached_input_tokens:,} cached)" if t.cached_input_tokens else "")
    tokens_out = f"{t.output_tokens:,}" + (f" ({t.reasoning_tokens:,} reasoning)" if t.reasoning_tokens else "")
    return (
        f"| {name} | {t.answers:,} ({t.batch_answers:,} batch) | {t.reporting:,} | {tokens_in} | {tokens_out} | "
        f"{usd(t.cost_usd)} | {usd(t.estimated_usd)} | {_off(t.estimate_off)} |"
    )


def cost_section(summary: Summary) -> list[str]:
    """summary.md's cost table; [] for a run without a price."""
    cost = summary.cost
    if cost is None:
        return []
    lines = [
        "",
        "## Cost",
        "",
        f"At list prices {_price_line(cost)}: each answer's reported usage, a batch answer at the batch price. Beside "
        f"it, the estimate `--dry-run` makes of the same requests (text at 4 characters a token, images by the "
        f"{cost.image_rule} rule) and how far it was off. Answers that report no usage are not in either.",
        "",
        "| task | answers | reporting usage | input tokens | output tokens | cost | estimate | estimate off by |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [_row(t) for t in [*cost.tasks.values(), cost.total]]
    if cost.judge_calls:
        lines += ["", f"The judge's {cost.judge_calls:,} calls cost {usd(cost.judge_usd)}, counted apart."]
    return lines


def cost_line(summary: Summary) -> str | None:
    """The terminal's one line on cost, or None for a run without a price."""
    cost = summary.cost
    if cost is None:
        return None
    total = cost.total
    line = f"cost: {usd(total.cost_usd)} for {total.reporting:,} answers reporting usage"
    if total.estimated_usd is not None:
        line += f" (estimate {usd(total.estimated_usd)}, off by {_off(total.estimate_off)})"
    line += f"; prices as of {cost.price.get('as_of') or 'an unknown date'}"
    if cost.judge_calls:
        line += f"; the judge's calls {usd(cost.judge_usd)} apart"
    return line
