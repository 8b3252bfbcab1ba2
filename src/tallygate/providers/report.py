"""What a provider's reports say, per UTC day x model, in the ledger's convention.

``input_tokens`` counts all input (uncached + cache reads + cache writes),
``cached_input_tokens`` the cache reads and ``cache_write_tokens`` the cache writes, as the
ledger records them (gateway/anthropic_usage.py). A figure is ``None`` where the provider does
not report it; ``cost`` is in US dollars.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

MEASURES = ("requests", "input_tokens", "cached_input_tokens", "cache_write_tokens",
            "output_tokens", "cost")


@dataclass(slots=True)
class ProviderFigures:
    requests: int | None = None
    input_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    output_tokens: int | None = None
    cost: Decimal | None = None

    def add(self, measure: str, value: int | Decimal) -> None:
        """Add to a figure (``None`` counts as nothing yet)."""
        current = getattr(self, measure)
        setattr(self, measure, value if current is None else current + value)


@dataclass(slots=True)
class ProviderReport:
    """Figures per (UTC day, the provider's model name).

    ``measures`` are those the provider reports at all (Anthropic reports no request count;
    no cost when ``api_key_ids`` narrow the usage, cost reports being per account); the
    others are not compared.
    """

    measures: tuple[str, ...]
    days: dict[tuple[date, str], ProviderFigures] = field(default_factory=dict)

    def figures(self, day: date, model: str) -> ProviderFigures:
        return self.days.setdefault((day, model), ProviderFigures())

    def fold_cost_names(self) -> None:
        """Attach a cost billed under a model name that differs only in case from a model
        with usage that day (OpenAI's line items are not always spelt as the usage's models);
        a cost no model's name matches stays a row of its own (``missing_here``)."""
        usage_names = {(day, model.lower()): model for (day, model), f in self.days.items()
                       if f.input_tokens is not None}
        for (day, model), figures in list(self.days.items()):
            if figures.input_tokens is not None or figures.cost is None:
                continue
            target = usage_names.get((day, model.lower()))
            if target is not None and target != model:
                self.figures(day, target).add("cost", figures.cost)
                del self.days[(day, model)]
