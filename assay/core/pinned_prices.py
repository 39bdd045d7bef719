"""Token prices pinned with an evaluation, so a cost never changes after the fact.

The ``model_outputs`` partition of a version carries, on every row, the per-1k-token prices the
registry had for that version when the evaluation ran. Cost is computed from these pinned
prices: changing a version's prices in the registry changes its cost only from its next
evaluation (a rerun answered by the request cache counts: it re-pins the prices of the day).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from assay.core.records import TokenPrices

PROMPT_PRICE = "price_prompt_per_1k"
COMPLETION_PRICE = "price_completion_per_1k"
PRICE_COLUMNS = (PROMPT_PRICE, COMPLETION_PRICE)


@dataclass(frozen=True, slots=True)
class PinnedPrices:
    """What a ``model_outputs`` table says about its prices."""

    pinned: bool  # False: written before prices were pinned
    prices: TokenPrices | None  # None: no prices were set when the evaluation ran


def pin_prices(table: pa.Table, prices: TokenPrices | None) -> pa.Table:
    """``table`` with the price columns set to ``prices`` on every row (null: no prices)."""
    for name in PRICE_COLUMNS:
        if name in table.column_names:
            table = table.drop_columns([name])
    values = (None, None) if prices is None else (prices.prompt_per_1k, prices.completion_per_1k)
    for name, value in zip(PRICE_COLUMNS, values, strict=True):
        table = table.append_column(
            pa.field(name, pa.float64()), pa.array([value] * table.num_rows, pa.float64())
        )
    return table


def pinned_prices(table: pa.Table, where: str = "model_outputs") -> PinnedPrices:
    """The prices pinned in ``table``; a table whose rows disagree is refused, naming it."""
    if not all(name in table.column_names for name in PRICE_COLUMNS):
        return PinnedPrices(False, None)
    values = []
    for name in PRICE_COLUMNS:
        distinct = pc.unique(table[name]).to_pylist()
        if len(distinct) > 1:
            raise ValueError(f"{where}: column {name!r} holds several prices {distinct[:3]}")
        value = distinct[0] if distinct else None
        if value is not None and (not math.isfinite(value) or value < 0):
            raise ValueError(f"{where}: column {name!r} holds an invalid price {value!r}")
        values.append(value)
    if None in values:
        return PinnedPrices(True, None)
    return PinnedPrices(True, TokenPrices(values[0], values[1]))
