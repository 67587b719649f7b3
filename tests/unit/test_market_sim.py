from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from domain.candles import validate_frame
from domain.errors import InvalidDataError
from domain.market_sim import (
    CORRUPTIONS,
    MarketSimConfig,
    series_seed,
    simulate_candles,
    synthetic_order_book,
)
from domain.timeframes import DAY_MS

M = 60_000
START = 1_700_006_400_000  # a UTC midnight
CLEAN = MarketSimConfig(gap_rate=0.0, bad_row_rate=0.0)


def sim(days: float = 30, *, seed: int = 7, config: MarketSimConfig | None = None, timeframe: str = "1m"):
    return simulate_candles(
        start_ms=START, end_ms=START + int(days * DAY_MS), timeframe=timeframe, seed=seed, config=config
    )


def test_same_seed_same_market_other_seed_other_market() -> None:
    assert_frame_equal(sim(3, seed=1), sim(3, seed=1))
    assert not sim(3, seed=1)["close"].equals(sim(3, seed=2)["close"])
    assert series_seed(1, "BTC/USDT") == series_seed(1, "BTC/USDT") != series_seed(1, "ETH/USDT")


def test_grid_schema_and_clean_candles_are_valid() -> None:
    frame = sim(5, config=CLEAN)
    assert frame.height == 5 * 1440
    assert frame["ts"].to_list() == list(range(START, START + 5 * DAY_MS, M))
    result = validate_frame(
        frame.select("ts", "open", "high", "low", "close", "volume"), timeframe="1m", now_ms=START + 6 * DAY_MS
    )
    assert result.rejected.height == 0
    assert result.flagged.height == 0


def test_all_regimes_appear_and_trends_drift_their_way() -> None:
    frame = sim(30, config=CLEAN).with_columns(pl.col("close").log().diff().alias("r"))
    by_regime = dict(frame.group_by("regime").agg(pl.col("r").mean()).iter_rows())
    assert set(by_regime) == {"range", "trend_up", "trend_down"}
    assert by_regime["trend_up"] > 0 > by_regime["trend_down"]
    shares = frame["regime"].value_counts(normalize=True)["proportion"]
    assert shares.min() > 0.1


def test_volatility_clusters_and_volume_spikes() -> None:
    frame = sim(30, config=CLEAN)
    r = np.diff(np.log(frame["close"].to_numpy()))
    abs_r = np.abs(r - r.mean())
    # GARCH: large moves follow large moves (plain iid noise gives ~0).
    assert np.corrcoef(abs_r[:-1], abs_r[1:])[0, 1] > 0.05
    calm = simulate_candles(
        start_ms=START,
        end_ms=START + 30 * DAY_MS,
        seed=7,
        config=MarketSimConfig(
            garch_alpha=0.0, garch_beta=0.0, gap_rate=0.0, bad_row_rate=0.0, downtrend_vol_multiple=1.0
        ),
    )
    r_calm = np.abs(np.diff(np.log(calm["close"].to_numpy())))
    assert abs(np.corrcoef(r_calm[:-1], r_calm[1:])[0, 1]) < 0.05
    volume = frame["volume"].to_numpy()
    spikes = (volume > 4 * np.median(volume)).mean()
    assert 0.0005 < spikes < 0.02
    o, h, low, c = (frame[n].to_numpy() for n in ("open", "high", "low", "close"))
    assert np.all(h >= np.maximum(o, c)) and np.all(low <= np.minimum(o, c))


def test_gap_and_bad_row_rates_are_roughly_as_configured() -> None:
    config = MarketSimConfig(gap_rate=0.01, mean_gap_bars=5.0, bad_row_rate=0.005)
    frame = sim(100, config=config)
    expected = 100 * 1440
    missing = 1 - frame.height / expected
    assert 0.006 < missing < 0.014
    ts = frame["ts"]
    runs = int((ts.diff().drop_nulls() > M).sum())
    assert 2.5 < (expected - frame.height) / runs < 8  # holes come in runs of ~mean_gap_bars
    bad = frame.filter(pl.col("corruption").is_not_null())
    assert 0.0035 < bad.height / frame.height < 0.0065
    assert set(bad["corruption"]) == set(CORRUPTIONS)


def test_validation_rejects_exactly_the_corrupted_rows() -> None:
    frame = sim(20, config=MarketSimConfig(bad_row_rate=0.002), seed=3)
    result = validate_frame(frame.drop("regime", "corruption"), timeframe="1m", now_ms=START + 30 * DAY_MS)
    corrupted = frame.with_row_index("row_index").filter(pl.col("corruption").is_not_null())
    assert sorted(result.rejected["row_index"].to_list()) == corrupted["row_index"].cast(pl.Int64).to_list()
    expected_reason = {
        "nan_close": "NOT_FINITE",
        "negative_volume": "NEGATIVE_VOLUME",
        "high_below_low": "HIGH_BELOW_LOW",
    }
    assert result.rejected["reason"].to_list() == [expected_reason[c] for c in corrupted["corruption"]]


def test_higher_timeframes_scale_volatility() -> None:
    one = np.diff(np.log(sim(60, config=CLEAN)["close"].to_numpy())).std()
    hour = np.diff(np.log(sim(60, config=CLEAN, timeframe="1h")["close"].to_numpy())).std()
    assert 4 < hour / one < 12  # sqrt(60) ~ 7.7


def test_order_book_is_sane_and_depth_decays() -> None:
    book = synthetic_order_book(symbol="BTC/USDT", mid=50_000.0, ts_ms=START, seed=1, levels=60)
    bids, asks = np.array(book.bids), np.array(book.asks)
    assert len(bids) == len(asks) == 60
    assert bids[0, 0] < 50_000.0 < asks[0, 0]
    assert np.all(np.diff(bids[:, 0]) < 0) and np.all(np.diff(asks[:, 0]) > 0)
    assert np.all(bids[:, 1] > 0) and np.all(asks[:, 1] > 0)
    assert 0.5 < book.spread_bps < 4.0
    assert bids[:10, 1].sum() > bids[-10:, 1].sum()
    assert synthetic_order_book(symbol="X", mid=1.0, ts_ms=0, seed=5) == synthetic_order_book(
        symbol="X", mid=1.0, ts_ms=0, seed=5
    )
    ccxt_bids = book.as_ccxt()["bids"]
    assert isinstance(ccxt_bids, list) and ccxt_bids[0] == list(book.bids[0])


def test_invalid_parameters_are_refused() -> None:
    with pytest.raises(InvalidDataError):
        MarketSimConfig(garch_alpha=0.5, garch_beta=0.6)
    with pytest.raises(InvalidDataError):
        MarketSimConfig(gap_rate=1.5)
    with pytest.raises(InvalidDataError):
        synthetic_order_book(symbol="X", mid=0.0, ts_ms=0, seed=1)
    assert sim(0).height == 0
