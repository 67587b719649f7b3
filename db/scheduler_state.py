"""The smart scheduler's state between flow runs: one JSONB row per scheduler name in ``scheduler_state``.

The row holds :meth:`domain.scheduling.SmartScheduler.to_dict` as is. Both functions run inside the caller's
transaction; a flow loads at the start of a run and saves at the end, in one transaction per save.
"""

from __future__ import annotations

from dataclasses import asdict

from sqlalchemy import Connection, func, select
from sqlalchemy.dialects.postgresql import insert

from db.schema import scheduler_state
from domain.scheduling import SchedulerConfig, SmartScheduler

__all__ = ["load_scheduler", "save_scheduler"]


def load_scheduler(
    conn: Connection, name: str, *, config: SchedulerConfig | None = None, for_update: bool = False
) -> SmartScheduler:
    """The scheduler saved under ``name``, or an empty one when none is.

    ``config``, when given, replaces the stored thresholds (the counters, trade times and latency samples are
    kept), so a changed setting takes effect on the next run. ``for_update`` locks the row until the caller's
    transaction ends, for a load-modify-save that must not interleave with another run's.

    Raises:
        InvalidDataError: the stored state is of another version or malformed (from ``SmartScheduler.from_dict``).
    """
    query = select(scheduler_state.c.state).where(scheduler_state.c.name == name)
    if for_update:
        query = query.with_for_update()
    stored = conn.execute(query).scalar_one_or_none()
    if stored is None:
        return SmartScheduler(config)
    if config is not None:
        stored = {**stored, "config": asdict(config)}
    return SmartScheduler.from_dict(stored)


def save_scheduler(conn: Connection, name: str, scheduler: SmartScheduler) -> None:
    """Store ``scheduler`` under ``name``, replacing what was there."""
    stmt = insert(scheduler_state).values(name=name, state=scheduler.to_dict())
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[scheduler_state.c.name],
            set_={"state": stmt.excluded.state, "updated_at": func.now()},
        )
    )
