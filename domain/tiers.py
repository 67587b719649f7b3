"""Execution tiers: how much of the normal position size a signal of a given score earns.

A score is on the 0-100 scale produced by the scorer. Tiers (issue 5):

- ``FULL``    score >= 75          -> 100% of the risk-budgeted size
- ``REDUCED`` 60 <= score < 75     -> 65%
- ``SKIP``    score < 60           -> no trade
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Final

from domain.errors import InvalidDataError

__all__ = ["TIER_SIZE_MULTIPLIER", "Tier", "tier_for_score"]


class Tier(StrEnum):
    """Execution tier of a scored signal."""

    FULL = "FULL"
    REDUCED = "REDUCED"
    SKIP = "SKIP"


#: Fraction (0-1) of the risk-budgeted position size each tier trades.
TIER_SIZE_MULTIPLIER: Final[dict[Tier, float]] = {
    Tier.FULL: 1.0,
    Tier.REDUCED: 0.65,
    Tier.SKIP: 0.0,
}


def tier_for_score(score: float, *, full_at: float = 75.0, reduced_at: float = 60.0) -> Tier:
    """Map a 0-100 score to its tier.

    ``score >= full_at`` is FULL, ``reduced_at <= score < full_at`` is REDUCED, anything lower is SKIP.
    Scores outside 0-100 are not rejected (thresholds decide), but NaN is: a NaN compares false with
    everything and would silently fall through to SKIP, hiding a bug in the scorer.

    Raises:
        InvalidDataError: ``score`` or a threshold is NaN, or ``reduced_at > full_at``.
    """
    if math.isnan(score):
        raise InvalidDataError("tier_for_score: score is NaN (the scorer produced an undefined value)")
    if math.isnan(full_at) or math.isnan(reduced_at):
        raise InvalidDataError("tier_for_score: thresholds must not be NaN")
    if reduced_at > full_at:
        raise InvalidDataError(f"tier_for_score: reduced_at ({reduced_at}) must be <= full_at ({full_at})")
    if score >= full_at:
        return Tier.FULL
    if score >= reduced_at:
        return Tier.REDUCED
    return Tier.SKIP
