"""What a backtest is tuned by: one frozen value shared by the replay, the statistics and the weight fit."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from domain.errors import InvalidDataError
from domain.execution import ExecutionModel, RiskLimits
from domain.scheduling import SchedulerConfig
from domain.scoring import ScoreWeights
from domain.signals import SignalConfig

__all__ = ["BacktestConfig"]


@dataclass(frozen=True, kw_only=True)
class BacktestConfig:
    """Everything a backtest is tuned by.

    - ``signal``, ``limits``, ``execution``, ``scheduler``: the live path's own configurations (defaults:
      1% risk per trade, 5% notional cap, 5 bps slippage, 10 bps fee, 5 min between trades, cool-off after 5
      consecutive failures).
    - ``initial_equity``: quote currency.
    - ``tp1_target``/``tp2_target``: which of the signal's extension targets (1.272, 1.618, 2.618) are TP1/TP2.
    - ``returns_window``: per-bar returns correlated by condition 7.
    - ``losses_are_failures``: a losing closed trade counts as a scheduler failure (a void entry always does).
    - ``hypothetical``: also simulate every scored setup, taken one at a time regardless of score.
    - ``bootstrap_resamples``, ``confidence``, ``seed`` (of :func:`domain.backtest.run_backtest`): the
      correlation intervals.
    - ``train_fraction``: the oldest share of each series (by bar count) used to fit weights; ``fit_weights``
      switches the fit on, ``min_fit_samples`` is the least training sample it accepts.
    """

    signal: SignalConfig = field(default_factory=SignalConfig)
    limits: RiskLimits = field(default_factory=RiskLimits)
    execution: ExecutionModel = field(default_factory=ExecutionModel)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    initial_equity: float = 10_000.0
    tp1_target: int = 0
    tp2_target: int = 1
    returns_window: int = 100
    losses_are_failures: bool = True
    hypothetical: bool = True
    bootstrap_resamples: int = 2000
    confidence: float = 0.95
    train_fraction: float = 0.6
    fit_weights: bool = True
    min_fit_samples: int = 30

    def __post_init__(self) -> None:
        targets = len(self.signal.fib.extension_ratios)
        if not 0 <= self.tp1_target <= self.tp2_target < targets:
            raise InvalidDataError(f"need 0 <= tp1_target <= tp2_target < {targets} (extension targets)")
        if not (math.isfinite(self.initial_equity) and self.initial_equity > 0):
            raise InvalidDataError("initial_equity must be a finite amount > 0")
        if not 0 < self.train_fraction < 1 or not 0 < self.confidence < 1:
            raise InvalidDataError("train_fraction and confidence are fractions in (0, 1)")
        if self.returns_window < 2 or self.bootstrap_resamples < 1:
            raise InvalidDataError("returns_window >= 2 bars and bootstrap_resamples >= 1")

    def with_weights(self, weights: ScoreWeights) -> BacktestConfig:
        """The same configuration, scoring with ``weights``."""
        scoring = replace(self.signal.scoring, weights=weights)
        return replace(self, signal=replace(self.signal, scoring=scoring))
