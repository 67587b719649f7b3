"""Backtest: the replay follows the live path's rules, the statistics are right, nothing looks ahead."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from domain.backtest import (
    EVERY_SETUP,
    POPULATIONS,
    TRADED,
    BacktestConfig,
    BacktestResult,
    audit_lookahead,
    pool_results,
    random_walk_controls,
    run_backtest,
)
from domain.backtest_audit import compare_frames
from domain.backtest_market import prepare_market
from domain.backtest_replay import replay
from domain.backtest_stats import (
    calibration_table,
    correlation_with_ci,
    daily_sharpe,
    max_drawdown,
    performance_metrics,
)
from domain.errors import InvalidDataError
from domain.execution import ExecutionModel
from domain.market_sim import MarketSimConfig, simulate_candles
from domain.scoring import COMPONENTS, ScoreWeights
from domain.signals import SignalConfig
from domain.tiers import tier_for_score
from domain.timeframes import DAY_MS
from domain.trade_simulation import BarArrays, simulate_trades
from domain.weight_fit import fit_score_weights

START = 1_700_006_400_000  # a UTC midnight
CONFIG = BacktestConfig(bootstrap_resamples=300)


def market(days: float, *, symbols: int = 2, seed: int = 3) -> dict[str, pl.DataFrame]:
    """Simulated 1m candles with regimes (so trends and pullbacks occur), holes, no bad rows."""
    end = START + int(days * DAY_MS)
    sim = MarketSimConfig(bad_row_rate=0.0)
    return {
        f"S{k}/USDT": simulate_candles(start_ms=START, end_ms=end, seed=seed + k, config=sim).drop(
            "regime", "corruption"
        )
        for k in range(symbols)
    }


@pytest.fixture(scope="module")
def candles() -> dict[str, pl.DataFrame]:
    return market(5)


@pytest.fixture(scope="module")
def result(candles: dict[str, pl.DataFrame]) -> BacktestResult:
    return run_backtest(candles, timeframe="1m", config=CONFIG, seed=11, controls=2)


# --- the replay follows the rules ------------------------------------------------------------------------


def test_the_replay_trades_and_scores_both_hypothetical_populations(result: BacktestResult) -> None:
    run = result.run
    assert run.trades.height >= 20
    assert run.setups.height >= 20
    assert run.every_setup.height > run.setups.height
    assert set(run.setups["decision"].unique()) >= {"enter", "reject"}, "SKIP/REJECT setups must be included"
    assert [e.population for e in result.correlations] == list(POPULATIONS)


def test_trades_of_a_symbol_never_overlap_and_keep_the_scheduler_gap(result: BacktestResult) -> None:
    gap = CONFIG.scheduler.min_trade_gap_ms
    for _, trades in result.run.trades.sort("signal_ts").group_by("symbol"):
        rows = trades.sort("signal_ts").to_dicts()
        for before, after in itertools.pairwise(rows):
            assert before["status"] == "CLOSED", "a position open at the data end is the symbol's last"
            # the next signal acts at its close, which must not precede the previous exit candle's close
            assert after["signal_idx"] >= before["exit_idx"]
            assert after["signal_ts"] - before["signal_ts"] >= gap


def test_every_trade_earned_a_tier_and_respects_the_size_limit(result: BacktestResult) -> None:
    trades = result.run.trades
    assert (trades["score"] >= 60).all()
    assert all(tier_for_score(s) == t for s, t in zip(trades["score"], trades["tier"], strict=True))
    fraction = trades["notional"] / trades["equity_before"]
    # entry fills at the next open plus slippage, sizing used the signal close: allow for that move
    assert (fraction <= CONFIG.limits.max_position_fraction * 1.02).all()


def test_trade_pnl_equals_the_simulator_with_the_real_quantity(candles: dict[str, pl.DataFrame]) -> None:
    run = replay(prepare_market(candles, timeframe="1m", config=CONFIG), config=CONFIG)
    for symbol, frame in candles.items():
        trades = run.trades.filter(pl.col("symbol") == symbol)
        if trades.height == 0:
            continue
        direct = simulate_trades(
            BarArrays.from_frame(frame),
            signal_idx=trades["signal_idx"],
            side=np.where(trades["direction"] == "long", 1, -1),
            quantity=trades["quantity"],
            stop=trades["stop"],
            tp1=trades["tp1"],
            tp2=trades["tp2"],
            model=CONFIG.execution,
        )
        assert direct["status"].to_list() == trades["status"].to_list()
        assert direct["exit_idx"].to_list() == trades["exit_idx"].to_list()
        np.testing.assert_allclose(trades["net_pnl"], direct["net_pnl"], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(trades["fees"], direct["fees"], rtol=1e-9)


def test_equity_ends_at_initial_plus_closed_net_plus_open_positions_marked(result: BacktestResult) -> None:
    trades, equity = result.run.trades, result.run.equity
    closed = trades.filter(pl.col("status") == "CLOSED")["net_pnl"].to_numpy().sum()
    open_ = trades.filter(pl.col("status") == "OPEN")
    marked = (open_["net_pnl"] + open_["unrealised_pnl"]).to_numpy().sum()
    assert equity["equity"][-1] == pytest.approx(CONFIG.initial_equity + closed + marked, rel=1e-9)
    assert (equity["ts"].diff().drop_nulls() > 0).all()
    assert result.metrics.max_drawdown == pytest.approx(equity["drawdown"].to_numpy().max())


def test_the_hypothetical_walk_is_blind_to_the_score(candles: dict[str, pl.DataFrame]) -> None:
    prepared = prepare_market(candles, timeframe="1m", config=CONFIG)
    base = replay(prepared, config=CONFIG)
    volume_only = ScoreWeights(technical=0, volume=100, volatility=0, win_rate=0, market=0)
    other = replay(prepared, config=CONFIG.with_weights(volume_only))
    assert base.setups["signal_idx"].to_list() == other.setups["signal_idx"].to_list()
    assert not base.setups["score"].equals(other.setups["score"])
    for _, rows in base.setups.group_by("symbol"):
        ordered = rows.sort("signal_ts").to_dicts()
        for before, after in itertools.pairwise(ordered):
            assert before["status"] != "OPEN"
            if before["status"] == "CLOSED":  # one at a time: the next starts once this one's exit is known
                assert after["signal_ts"] >= before["exit_ts"]


def test_every_setup_scores_equal_evaluate_at_where_both_exist(result: BacktestResult) -> None:
    joined = result.run.setups.join(result.run.every_setup, on=("symbol", "signal_idx"), suffix="_vec")
    assert joined.height == result.run.setups.height
    np.testing.assert_allclose(joined["score"], joined["score_vec"], atol=1e-9)
    np.testing.assert_allclose(joined["f_win_rate"], joined["f_win_rate_vec"], atol=1e-12)


def test_refitting_may_change_the_weights_only(candles: dict[str, pl.DataFrame]) -> None:
    prepared = prepare_market(candles, timeframe="1m", config=CONFIG)
    changed = replace(CONFIG, signal=SignalConfig(stop_atr_buffer=1.0))
    with pytest.raises(InvalidDataError, match="only the score weights"):
        replay(prepared, config=changed)


# --- look-ahead ------------------------------------------------------------------------------------------


def test_cutting_the_data_changes_nothing_known_before_the_cut(candles: dict[str, pl.DataFrame]) -> None:
    audit = audit_lookahead(candles, timeframe="1m", config=CONFIG, cuts=3, seed=5)
    assert audit.mismatches == ()
    assert audit.ok and len(audit.cuts) == 3
    assert audit.bars_compared > 0 and audit.evaluations_compared > 0
    assert audit.trades_compared > 0 and audit.setups_compared > 0


def test_the_audit_comparison_reports_a_changed_value() -> None:
    full = pl.DataFrame({"a": [1.0, float("nan"), 3.0], "b": ["x", "y", "z"]})
    assert compare_frames("same", full, full.clone()) == []
    tampered = full.with_columns(pl.Series("a", [1.0, float("nan"), 3.5]))
    (line,) = compare_frames("cut", full, tampered)
    assert "'a'" in line and "row 2" in line
    assert compare_frames("short", full, full.head(2))[0].startswith("short: 3 rows")


# --- statistics ------------------------------------------------------------------------------------------


def test_correlation_is_exact_on_a_line_and_its_interval_is_seeded() -> None:
    x = np.arange(50, dtype=float)
    line = correlation_with_ci(x, 2 * x + 1, population="p", resamples=200, seed=1)
    assert line.pearson == pytest.approx(1.0) and line.spearman == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    score, r = rng.uniform(0, 100, 400), rng.normal(0, 1, 400)
    one = correlation_with_ci(score, r, population="p", resamples=500, seed=3)
    again = correlation_with_ci(score, r, population="p", resamples=500, seed=3)
    other = correlation_with_ci(score, r, population="p", resamples=500, seed=4)
    assert one == again and one.pearson_ci != other.pearson_ci
    assert one.zero_in_pearson_ci and one.zero_in_spearman_ci
    assert one.pearson_ci[0] < one.pearson < one.pearson_ci[1]


def test_clustered_resampling_widens_the_interval_of_duplicated_pairs() -> None:
    rng = np.random.default_rng(1)
    score, r = rng.uniform(0, 100, 60), rng.normal(0, 1, 60)
    score10, r10, legs = np.repeat(score, 10), np.repeat(r, 10), np.repeat(np.arange(60), 10)
    naive = correlation_with_ci(score10, r10, population="p", resamples=400, seed=2)
    clustered = correlation_with_ci(score10, r10, population="p", clusters=legs, resamples=400, seed=2)
    assert clustered.clusters == 60 and naive.clusters == 600
    width = lambda e: e.pearson_ci[1] - e.pearson_ci[0]  # noqa: E731
    assert width(clustered) > 2 * width(naive)
    assert clustered.pearson == pytest.approx(naive.pearson)


def test_calibration_buckets_by_hand() -> None:
    table = calibration_table([60.0, 64.9, 65.0, 100.0, 59.0], [1.0, -1.0, 2.0, -0.5, 9.0])
    rows = {row["bucket"]: row for row in table.iter_rows(named=True)}
    assert rows["60-65"]["count"] == 2 and rows["60-65"]["mean_r"] == pytest.approx(0.0)
    assert rows["60-65"]["win_rate"] == pytest.approx(0.5)
    assert rows["65-70"]["count"] == 1 and rows["95-100"]["count"] == 1
    assert rows["80-85"]["count"] == 0 and rows["80-85"]["mean_r"] is None
    assert int(table["count"].sum()) == 4  # 59 lies below the first bucket


def test_performance_metrics_by_hand() -> None:
    trades = pl.DataFrame(
        {
            "status": ["CLOSED", "CLOSED", "CLOSED", "OPEN"],
            "net_pnl": [30.0, -10.0, -20.0, -1.0],
            "fees": [1.0, 1.0, 1.0, 0.5],
            "r_multiple": [1.5, -0.5, -1.0, None],
        }
    )
    equity = pl.DataFrame({"ts": [0, DAY_MS, 2 * DAY_MS, 3 * DAY_MS], "equity": [1000.0, 1100.0, 990.0, 1045.0]})
    m = performance_metrics(trades, equity, initial_equity=1000.0)
    assert (m.trades, m.closed, m.open_at_end) == (4, 3, 1)
    assert m.win_rate == pytest.approx(1 / 3) and m.profit_factor == pytest.approx(1.0)
    assert m.expectancy_r == pytest.approx(0.0) and m.fees == pytest.approx(3.5)
    assert m.max_drawdown == pytest.approx(0.1) and m.max_drawdown_quote == pytest.approx(110.0)
    daily = np.array([0.1, -0.1, 55 / 990])
    assert m.sharpe == pytest.approx(daily.mean() / daily.std(ddof=1) * math.sqrt(365)) and m.sharpe_days == 3
    assert max_drawdown([]) == (0.0, 0.0) and math.isnan(daily_sharpe([0], [1.0])[0])


def test_the_weight_fit_finds_the_component_that_drives_r() -> None:
    rng = np.random.default_rng(4)
    fractions = {name: rng.uniform(0, 1, 800) for name in COMPONENTS}
    r = 3.0 * fractions["volume"] + 1.0 * fractions["market"] + rng.normal(0, 0.3, 800) - 1.5
    fit = fit_score_weights(fractions, r)
    assert fit.weights is not None
    weights = fit.weights.normalised()
    assert sum(weights.values()) == pytest.approx(100.0) and min(weights.values()) >= 0
    assert weights["volume"] == pytest.approx(75.0, abs=5) and weights["market"] == pytest.approx(25.0, abs=5)
    harmful = -sum(fractions.values()) + rng.normal(0, 0.3, 800)  # every component lowers R
    against = fit_score_weights(fractions, harmful)
    assert against.weights is None and "no component" in against.note
    assert fit_score_weights({n: v[:5] for n, v in fractions.items()}, r[:5]).weights is None


# --- controls and the whole result -----------------------------------------------------------------------


def test_random_walk_controls_are_matched_and_seeded(candles: dict[str, pl.DataFrame]) -> None:
    walks = random_walk_controls(candles, timeframe="1m", count=3, seed=9)
    assert list(walks) == ["RW0/S0/USDT", "RW1/S1/USDT", "RW2/S0/USDT"]
    source = candles["S0/USDT"]
    assert walks["RW0/S0/USDT"].height == source.height
    assert walks["RW0/S0/USDT"]["ts"][0] == source["ts"][0]
    assert walks["RW0/S0/USDT"]["open"][0] == pytest.approx(source["close"][0])
    assert walks["RW0/S0/USDT"].equals(random_walk_controls(candles, timeframe="1m", count=1, seed=9)["RW0/S0/USDT"])
    assert not walks["RW0/S0/USDT"].equals(walks["RW2/S0/USDT"])


def test_on_a_costless_random_walk_the_score_predicts_nothing() -> None:
    walks = random_walk_controls(market(10, symbols=1, seed=21), timeframe="1m", count=3, seed=1)
    free = replace(CONFIG, execution=ExecutionModel(fee_bps=0.0, slippage_bps=0.0), fit_weights=False)
    res = run_backtest(walks, timeframe="1m", config=free, seed=2)
    by_population = {e.population: e for e in res.correlations}
    assert by_population[EVERY_SETUP].n > 1000
    for estimate in res.correlations:
        assert estimate.n >= 30, estimate
        assert estimate.zero_in_pearson_ci, estimate
        assert abs(estimate.pearson) < 0.15


def test_the_result_carries_fit_controls_and_tables(result: BacktestResult) -> None:
    assert result.control is not None and result.control_costless is not None
    assert result.control_costless.config.execution.fee_bps == 0.0
    assert result.control.description.startswith("random-walk control: 2 series")
    cal = result.calibration
    assert cal is not None
    assert set(cal.periods["period"]) == {"train", "test"}
    assert set(cal.periods["population"]) == set(POPULATIONS)
    if cal.fit.weights is not None:
        assert cal.run is not None and set(cal.periods["weights"]) == {"default", "fitted"}
    assert result.calibration_traded["bucket"].to_list()[0] == "60-65"
    assert int(result.tiers.filter(pl.col("tier") == "ALL")["count"][0]) == result.metrics.closed
    pooled = pool_results([result, result], label="twice", seed=1)
    (traded,) = [e for e in pooled.correlations if e.population == TRADED]
    assert traded.n == 2 * result.correlations[0].n
    assert traded.pearson == pytest.approx(result.correlations[0].pearson)


def test_bad_input_is_refused() -> None:
    with pytest.raises(InvalidDataError):
        run_backtest({}, timeframe="1m")
    frame = market(0.5, symbols=1)["S0/USDT"].with_columns(pl.lit(float("nan")).alias("close"))
    with pytest.raises(InvalidDataError, match="finite"):
        run_backtest({"X/USDT": frame}, timeframe="1m")
    with pytest.raises(InvalidDataError):
        BacktestConfig(tp1_target=2, tp2_target=1)
