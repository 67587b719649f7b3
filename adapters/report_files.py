"""Backtest reports: markdown tables (for a terminal, a Prefect markdown artifact or a file) and PNG plots.

:func:`backtest_markdown` and :func:`pooled_markdown` only build text; :func:`write_report` writes
``backtest-<timeframe>.md`` plus ``-equity.png``, ``-drawdown.png``, ``-calibration.png`` and
``-score-vs-r.png`` into a directory the caller names. Plots use matplotlib's object API on the Agg canvas
(``matplotlib.figure.Figure``), so no global backend is switched and no display is needed.

Every table says which data it comes from: the result's description (series, timeframe, candle counts), the
population (``traded``: the replay's closed trades; ``scored setups, one at a time`` and ``every scored setup
bar``: hypothetical trades of scored setups regardless of score, see :mod:`domain.backtest_replay`) and, side
by side, the random-walk control.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from domain.backtest import BacktestResult, PooledSummary
from domain.backtest_stats import CorrelationEstimate, PerformanceMetrics
from domain.timeframes import from_ms

__all__ = ["backtest_markdown", "pooled_markdown", "write_report"]

_MAX_PLOT_POINTS = 20_000


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def _date(ts_ms: int) -> str:
    return from_ms(ts_ms).strftime("%Y-%m-%d %H:%M")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _ci(estimate: float, bounds: tuple[float, float]) -> str:
    return f"{_num(estimate)} [{_num(bounds[0])}, {_num(bounds[1])}]"


def _correlation_rows(label: str, estimates: Sequence[CorrelationEstimate]) -> list[list[str]]:
    return [
        [
            label,
            e.population,
            str(e.n),
            str(e.clusters),
            _ci(e.pearson, e.pearson_ci),
            "yes" if e.zero_in_pearson_ci else "no",
            _ci(e.spearman, e.spearman_ci),
            "yes" if e.zero_in_spearman_ci else "no",
        ]
        for e in estimates
    ]


_CORRELATION_HEADERS = (
    "data",
    "population",
    "n",
    "resampled units",
    "Pearson [CI]",
    "0 in CI",
    "Spearman [CI]",
    "0 in CI",
)


def _metrics_rows(columns: Sequence[PerformanceMetrics]) -> list[list[str]]:
    def row(name: str, fn: Callable[[PerformanceMetrics], object]) -> list[str]:
        return [name, *(str(fn(m)) for m in columns)]

    return [
        row("trades (filled entries)", lambda m: m.trades),
        row("closed / open at data end", lambda m: f"{m.closed} / {m.open_at_end}"),
        row("win rate (closed)", lambda m: _pct(m.win_rate)),
        row("profit factor", lambda m: _num(m.profit_factor, 2)),
        row("expectancy (mean R, closed)", lambda m: _num(m.expectancy_r)),
        row("net P&L, marked to market (quote)", lambda m: _num(m.net_pnl, 2)),
        row("fees paid (quote)", lambda m: _num(m.fees, 2)),
        row("final equity (quote)", lambda m: _num(m.final_equity, 2)),
        row("max drawdown", lambda m: f"{_pct(m.max_drawdown)} ({_num(m.max_drawdown_quote, 2)})"),
        row("Sharpe (daily returns x sqrt(365))", lambda m: f"{_num(m.sharpe, 2)} over {m.sharpe_days} days"),
    ]


def _tier_rows(label: str, tiers: pl.DataFrame) -> list[list[str]]:
    return [
        [
            label,
            str(row["tier"]),
            str(row["count"]),
            _pct(row["win_rate"]),
            _num(row["expectancy_r"]),
            _num(row["mean_net_pnl"], 2),
            _num(row["total_net_pnl"], 2),
        ]
        for row in tiers.iter_rows(named=True)
    ]


_TIER_HEADERS = ("data", "tier", "closed trades", "win rate", "expectancy (mean R)", "mean net P&L", "total net P&L")


def _calibration_rows(label: str, table: pl.DataFrame, *, keep_empty: bool) -> list[list[str]]:
    return [
        [label, str(row["bucket"]), str(row["count"]), _num(row["mean_r"]), _pct(row["win_rate"])]
        for row in table.iter_rows(named=True)
        if keep_empty or row["count"]
    ]


_CALIBRATION_HEADERS = ("data", "score bucket", "count", "mean R", "win rate")


def _period_rows(label: str, periods: pl.DataFrame) -> list[list[str]]:
    return [
        [
            label,
            str(row["weights"]),
            "in-sample (train)" if row["period"] == "train" else "out-of-sample (test)",
            str(row["population"]),
            str(row["n"]),
            str(row["clusters"]),
            _ci(row["pearson"], (row["pearson_lo"], row["pearson_hi"])),
            _ci(row["spearman"], (row["spearman_lo"], row["spearman_hi"])),
            _num(row["mean_r"]),
            _pct(row["win_rate"]),
        ]
        for row in periods.iter_rows(named=True)
    ]


_PERIOD_HEADERS = (
    "data",
    "weights",
    "period",
    "population",
    "n",
    "resampled units",
    "Pearson [CI]",
    "Spearman [CI]",
    "mean R",
    "win rate",
)


def _weights_line(result: BacktestResult) -> str:
    default = result.config.signal.scoring.weights.normalised()
    text = "default weights: " + ", ".join(f"{k} {v:.1f}" for k, v in default.items())
    cal = result.calibration
    if cal is None:
        return text + "; no fit requested"
    fitted = cal.fit.weights
    extra = "" if fitted is None else "; fitted: " + ", ".join(f"{k} {v:.1f}" for k, v in fitted.normalised().items())
    return f"{text}{extra} ({cal.fit.note}; R-squared {_num(cal.fit.r_squared)})"


_COSTLESS = "control, no fees/slippage"
_POPULATION_NOTE = (
    "`traded`: the replay's closed trades (scores >= 60 only; resampled per trade). `scored setups, one at a"
    " time`: every scored setup (ENTER, SKIP and REJECT) taken one at a time per symbol regardless of score,"
    " hypothetical, non-overlapping (resampled per setup). `every scored setup bar`: every bar with a setup and"
    " its own hypothetical trade; overlapping, so the interval resamples blocks of one UTC day per symbol"
    " (resampled units = symbol-days; still slightly optimistic). Spearman intervals reuse the full sample's"
    " ranks. `control`: matched random walks with the same"
    " costs (the baseline to beat: fixed bps costs weigh more on tight stops, so a score that favours wide stops"
    " correlates with net R even on a random walk); `control, no fees/slippage`: the same walks without costs,"
    " where a Pearson correlation would mean a leak (Spearman may move there through the reward/risk geometry:"
    " near targets win more often and smaller)."
)


def backtest_markdown(result: BacktestResult, *, images: Sequence[str] = ()) -> str:
    """The whole report of one backtest (and its control, side by side) as markdown."""
    control = result.control
    cfg = result.config
    out = [
        f"# Backtest {result.timeframe}: does the score predict P&L?",
        "",
        f"- Data: {result.description}.",
        f"- Control: {control.description}; the same walks are also run without fees and slippage."
        if control
        else "- Control: none run.",
        f"- Costs: {cfg.execution.fee_bps:g} bps fee per fill, {cfg.execution.slippage_bps:g} bps slippage on market"
        f" fills; risk {cfg.limits.risk_per_trade:.1%} of equity per trade (x1.0 FULL, x0.65 REDUCED), notional cap"
        f" {cfg.limits.max_position_fraction:.0%}; one position per symbol;"
        f" >= {cfg.scheduler.min_trade_gap_ms / 60_000:g} min between trades;"
        f" cool-off after {cfg.scheduler.max_consecutive_failures} consecutive failures.",
        f"- Intervals: {cfg.confidence:.0%} percentile bootstrap, {cfg.bootstrap_resamples} resamples, seed"
        f" {result.seed}. Train/test split at {cfg.train_fraction:.0%} of each series' candles.",
        "",
        "## Data",
        "",
        _table(
            ("symbol", "candles", "from", "to", "test period from", "setup bars", "candidate bars"),
            [
                [
                    str(r["symbol"]),
                    str(r["bars"]),
                    _date(r["first_ts"]),
                    _date(r["last_ts"]),
                    _date(r["split_ts"]),
                    str(r["setup_bars"]),
                    str(r["candidate_bars"]),
                ]
                for r in result.run.series.iter_rows(named=True)
            ],
        ),
        "",
        "## Performance",
        "",
        _table(
            ("metric", "real data", *(["random-walk control"] if control else [])),
            _metrics_rows([result.metrics, *([control.metrics] if control else [])]),
        ),
        "",
        "## Expectancy per tier (closed trades)",
        "",
        _table(
            _TIER_HEADERS,
            _tier_rows("real", result.tiers) + (_tier_rows("control", control.tiers) if control else []),
        ),
        "",
        "## Does the score predict realised R?",
        "",
        _POPULATION_NOTE,
        "",
        _table(
            _CORRELATION_HEADERS,
            _correlation_rows("real", result.correlations)
            + (_correlation_rows("control", control.correlations) if control else [])
            + (_correlation_rows(_COSTLESS, result.control_costless.correlations) if result.control_costless else []),
        ),
        "",
        "## Calibration per score bucket",
        "",
        "### Traded",
        "",
        _table(
            _CALIBRATION_HEADERS,
            _calibration_rows("real", result.calibration_traded, keep_empty=True)
            + (_calibration_rows("control", control.calibration_traded, keep_empty=True) if control else []),
        ),
        "",
        "### Scored setups, one at a time (hypothetical, non-empty buckets)",
        "",
        _table(
            _CALIBRATION_HEADERS,
            _calibration_rows("real", result.calibration_setups, keep_empty=False)
            + (_calibration_rows("control", control.calibration_setups, keep_empty=False) if control else []),
        ),
        "",
        "### Every scored setup bar (hypothetical, overlapping, non-empty buckets)",
        "",
        _table(
            _CALIBRATION_HEADERS,
            _calibration_rows("real", result.calibration_every, keep_empty=False)
            + (_calibration_rows("control", control.calibration_every, keep_empty=False) if control else []),
        ),
        "",
        "## Score weights: in-sample vs out-of-sample",
        "",
        f"Real: {_weights_line(result)}.",
        "",
        *([f"Control: {_weights_line(control)}.", ""] if control else []),
        "Train = signalled AND closed before each series' split (the fit saw only the training part of every scored"
        " setup bar); test = signalled from the split on. Fitted weights come from a second replay.",
        "",
    ]
    periods = _period_rows("real", result.calibration.periods) if result.calibration else []
    if control and control.calibration:
        periods += _period_rows("control", control.calibration.periods)
    out += [_table(_PERIOD_HEADERS, periods) if periods else "No fit was run.", ""]
    out += [
        "## Funnel of candidate bars (real data)",
        "",
        _table(("what happened", "bars"), [[k, str(v)] for k, v in result.run.funnel.items()]),
        "",
    ]
    out += [f"![{Path(name).stem}]({name})" for name in images]
    return "\n".join(out) + "\n"


def pooled_markdown(
    real: PooledSummary, control: PooledSummary | None = None, costless: PooledSummary | None = None
) -> str:
    """Markdown tables of pooled results (and pooled controls side by side)."""
    both = [("real", real), *([("control", control)] if control else [])]
    everyone = [*both, *([(_COSTLESS, costless)] if costless else [])]
    out = [f"# {real.label}", "", "Sources:", ""]
    out += [f"- {source}" for source in real.sources]
    if control:
        out += ["", "Control sources (with and without costs):", ""] + [f"- {source}" for source in control.sources]
    out += [
        "",
        "## Correlation of score with realised R",
        "",
        _POPULATION_NOTE,
        "",
        _table(
            _CORRELATION_HEADERS, [row for label, s in everyone for row in _correlation_rows(label, s.correlations)]
        ),
        "",
        "## Expectancy per tier",
        "",
        _table(_TIER_HEADERS, [row for label, s in both for row in _tier_rows(label, s.tiers)]),
        "",
        "## Calibration, traded",
        "",
        _table(
            _CALIBRATION_HEADERS,
            [row for label, s in both for row in _calibration_rows(label, s.calibration_traded, keep_empty=True)],
        ),
        "",
        "## Calibration, scored setups one at a time (non-empty buckets)",
        "",
        _table(
            _CALIBRATION_HEADERS,
            [row for label, s in both for row in _calibration_rows(label, s.calibration_setups, keep_empty=False)],
        ),
        "",
        "## Calibration, every scored setup bar (non-empty buckets)",
        "",
        _table(
            _CALIBRATION_HEADERS,
            [row for label, s in both for row in _calibration_rows(label, s.calibration_every, keep_empty=False)],
        ),
        "",
        "## In-sample vs out-of-sample (weights fitted per run on its training period)",
        "",
    ]
    periods = [row for label, s in both if s.periods is not None for row in _period_rows(label, s.periods)]
    out += [_table(_PERIOD_HEADERS, periods) if periods else "No fit was run.", ""]
    return "\n".join(out) + "\n"


def _thin(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    step = max(1, values.shape[0] // _MAX_PLOT_POINTS)
    index = np.arange(0, values.shape[0], step)
    return index, values[index]


def _curve_plot(result: BacktestResult, column: str, path: Path, *, ylabel: str, scale: float) -> None:
    fig = Figure(figsize=(10, 4.5))
    ax = fig.add_subplot()
    for label, res in (("real", result), ("random-walk control", result.control)):
        if res is None or res.run.equity.height == 0:
            continue
        x, y = _thin(res.run.equity[column].to_numpy() * scale)
        ax.plot(x, y, label=f"{label} ({res.run.series.height} series)", linewidth=1.0)
    ax.set_xlabel("bar closes in time order (gaps between data periods left out)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{result.timeframe}: {ylabel}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _calibration_plot(result: BacktestResult, path: Path) -> None:
    fig = Figure(figsize=(15, 4.5))
    panels = (
        ("traded", "calibration_traded"),
        ("scored setups, one at a time", "calibration_setups"),
        ("every scored setup bar", "calibration_every"),
    )
    for k, (title, attr) in enumerate(panels):
        ax = fig.add_subplot(1, 3, k + 1)
        for label, res, marker in (("real", result, "o"), ("control", result.control, "s")):
            if res is None:
                continue
            table: pl.DataFrame = getattr(res, attr).filter(pl.col("count") > 0)
            mid = ((table["lo"] + table["hi"]) / 2).to_numpy()
            ax.plot(mid, table["mean_r"].to_numpy(), marker=marker, label=label)
            for x, y, n in zip(mid, table["mean_r"].to_numpy(), table["count"].to_numpy(), strict=True):
                ax.annotate(str(n), (x, y), fontsize=7, textcoords="offset points", xytext=(0, 5), ha="center")
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_xlabel("score bucket (midpoint); labels = count")
        ax.set_ylabel("mean realised R")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _scatter_plot(result: BacktestResult, path: Path) -> None:
    fig = Figure(figsize=(11, 4.5))
    for k, (label, res) in enumerate((("real", result), ("random-walk control", result.control))):
        if res is None:
            continue
        ax = fig.add_subplot(1, 2, k + 1)
        setups = res.run.setups.filter(pl.col("r_multiple").is_not_null())
        trades = res.run.trades.filter(pl.col("r_multiple").is_not_null())
        ax.scatter(setups["score"], setups["r_multiple"], s=6, alpha=0.4, label="scored setups, one at a time")
        ax.scatter(trades["score"], trades["r_multiple"], s=6, alpha=0.4, label="traded")
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.axvline(60.0, color="red", linewidth=0.8, linestyle="--")
        ax.set_xlabel("score (0-100)")
        ax.set_ylabel("realised R")
        ax.set_title(f"{label}: score vs R")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_report(result: BacktestResult, out_dir: Path | str) -> list[Path]:
    """Write the markdown report and its PNG plots into ``out_dir`` (created if needed); returns the paths,
    the markdown first."""
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    stem = f"backtest-{result.timeframe}"
    images = {
        "equity": root / f"{stem}-equity.png",
        "drawdown": root / f"{stem}-drawdown.png",
        "calibration": root / f"{stem}-calibration.png",
        "score-vs-r": root / f"{stem}-score-vs-r.png",
    }
    _curve_plot(result, "equity", images["equity"], ylabel="equity (quote, marked to market)", scale=1.0)
    _curve_plot(result, "drawdown", images["drawdown"], ylabel="drawdown (% below peak)", scale=100.0)
    _calibration_plot(result, images["calibration"])
    _scatter_plot(result, images["score-vs-r"])
    markdown = root / f"{stem}.md"
    markdown.write_text(backtest_markdown(result, images=[p.name for p in images.values()]), encoding="utf-8")
    return [markdown, *images.values()]
