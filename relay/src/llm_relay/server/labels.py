"""A bound on the metrics' label values that peers choose (issue 25).

The model a provider names in its answer becomes a label of the usage counters (and of /v1/usage): 20,000
distinct names echoed by a provider made /metrics 8.7 MB, growing without end. The first MAX_MODELS
names keep their own series; any later new name is counted under "other" (what Prometheus' own advice
on unbounded label values comes to), so the series, and the memory behind them, are bounded.
"""

from __future__ import annotations

MAX_MODELS = 256
OTHER = "other"


class ModelLabels:
    __slots__ = ("seen",)

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def label(self, model: str) -> str:
        if model in self.seen or not model:
            return model
        if len(self.seen) >= MAX_MODELS:
            return OTHER
        self.seen.add(model)
        return model
