"""What tokens cost: a model's list prices, as a preset carries them (``price:``) or ``--price`` gives them.

Prices are US dollars per million tokens, with the date they were read and where: a provider changes them, so a
cost is only ever as good as that date, and every cost u2eval prints names it. Batch prices are the providers'
batch APIs' (about half the live price at OpenAI, Anthropic and Google); cached input is what a provider charges
for input it served from its prompt cache.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from u2eval.errors import ConfigError
from u2eval.records import Usage


class Price(BaseModel):
    """List prices in USD per million tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)  # None: cached input costs what input does
    batch_input: float | None = Field(default=None, ge=0)  # None: the provider has no batch price
    batch_output: float | None = Field(default=None, ge=0)
    as_of: str = ""  # when the prices were read (ISO date)
    source: str = ""  # where: the provider's pricing page, or "--price"

    @property
    def has_batch(self) -> bool:
        return self.batch_input is not None and self.batch_output is not None

    def cost(self, input_tokens: float, output_tokens: float, cached_tokens: float = 0.0, batch: bool = False) -> float:
        """Dollars for these tokens (``cached_tokens`` are part of ``input_tokens``), live or batch."""
        if batch and not self.has_batch:
            raise ValueError("no batch price")
        input_price = self.batch_input if batch else self.input
        output_price = self.batch_output if batch else self.output
        assert input_price is not None and output_price is not None
        cached_price = self.cached_input if self.cached_input is not None else self.input
        if batch:  # a cached token costs the same share less in a batch as live
            cached_price = cached_price * input_price / self.input if self.input else 0.0
        fresh = max(0.0, input_tokens - cached_tokens)
        return (fresh * input_price + cached_tokens * cached_price + output_tokens * output_price) / 1e6

    def usage_cost(self, usage: Usage, batch: bool = False) -> float | None:
        """The cost of one answer's reported usage; None when it reported none."""
        if usage.input_tokens is None and usage.output_tokens is None:
            return None
        return self.cost(usage.input_tokens or 0, usage.output_tokens or 0, usage.cached_input_tokens or 0, batch)


def parse_price(text: str) -> Price:
    """``--price in=2.5,out=10[,cached=1.25][,batch_in=1.25,batch_out=5]`` (USD per million tokens)."""
    names = {"in": "input", "out": "output", "cached": "cached_input", "batch_in": "batch_input",
             "batch_out": "batch_output"}  # fmt: skip
    values: dict[str, float] = {}
    for part in text.split(","):
        key, sep, raw = part.partition("=")
        key = key.strip()
        if not sep or key not in names:
            raise ConfigError(f"--price takes {','.join(k + '=USD' for k in names)} per million tokens, not {part!r}")
        try:
            values[names[key]] = float(raw)
        except ValueError:
            raise ConfigError(f"--price {key}: {raw!r} is not a number of dollars") from None
    if "input" not in values or "output" not in values:
        raise ConfigError("--price needs at least in=… and out=… (USD per million tokens)")
    try:
        return Price.model_validate(values | {"source": "--price"})
    except ValueError as exc:
        raise ConfigError(f"--price: {exc}") from None
