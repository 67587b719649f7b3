from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvalidDataError
from domain.tiers import TIER_SIZE_MULTIPLIER, Tier, tier_for_score

_RANK = {Tier.SKIP: 0, Tier.REDUCED: 1, Tier.FULL: 2}
scores = st.floats(min_value=-50, max_value=150, allow_nan=False)


@pytest.mark.parametrize(
    ("score", "tier"),
    [
        (100.0, Tier.FULL),
        (75.0, Tier.FULL),
        (74.999, Tier.REDUCED),
        (60.0, Tier.REDUCED),
        (59.999, Tier.SKIP),
        (0.0, Tier.SKIP),
    ],
)
def test_tier_boundaries_follow_the_issue(score: float, tier: Tier) -> None:
    assert tier_for_score(score) is tier


def test_multipliers_are_full_reduced_and_nothing() -> None:
    assert TIER_SIZE_MULTIPLIER == {Tier.FULL: 1.0, Tier.REDUCED: 0.65, Tier.SKIP: 0.0}
    assert Tier.FULL == "FULL"


@given(scores, scores)
def test_tier_and_size_are_monotone_in_score(a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert _RANK[tier_for_score(low)] <= _RANK[tier_for_score(high)]
    assert TIER_SIZE_MULTIPLIER[tier_for_score(low)] <= TIER_SIZE_MULTIPLIER[tier_for_score(high)]


def test_custom_thresholds() -> None:
    assert tier_for_score(70, full_at=70, reduced_at=50) is Tier.FULL
    assert tier_for_score(50, full_at=70, reduced_at=50) is Tier.REDUCED
    assert tier_for_score(49, full_at=70, reduced_at=50) is Tier.SKIP


def test_nan_score_is_refused_not_silently_skipped() -> None:
    with pytest.raises(InvalidDataError, match="NaN"):
        tier_for_score(math.nan)


def test_inverted_thresholds_are_refused() -> None:
    with pytest.raises(InvalidDataError, match="reduced_at"):
        tier_for_score(70, full_at=60, reduced_at=75)
