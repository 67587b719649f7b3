"""What `db status` shows: tables, row counts, migration revision, TimescaleDB state."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, text

from db.migrate import current_revision
from db.schema import metadata
from db.timescale import timescale_status

# Above this many rows (planner estimate), an exact count(*) is not worth the scan.
EXACT_COUNT_LIMIT = 2_000_000


@dataclass(frozen=True, slots=True)
class TableStatus:
    name: str
    rows: int
    estimated: bool
    kind: str


@dataclass(frozen=True, slots=True)
class DatabaseStatus:
    revision: str | None
    timescale_on: bool
    timescale_detail: str
    tables: list[TableStatus]


def database_status(engine: Engine) -> DatabaseStatus:
    revision = current_revision(engine)
    tables: list[TableStatus] = []
    with engine.connect() as conn:
        ts = timescale_status(conn)
        hypertables = set(ts.get("hypertables", []))
        existing = set(
            conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")).scalars()
        )
        for name in sorted(metadata.tables):
            if name not in existing:
                continue
            estimate = conn.execute(
                text("SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = to_regclass(:t)"),
                {"t": name},
            ).scalar_one()
            if estimate > EXACT_COUNT_LIMIT:
                rows, estimated = int(estimate), True
            else:
                rows, estimated = (
                    int(conn.execute(text(f'SELECT count(*) FROM "{name}"')).scalar_one()),
                    False,
                )
            tables.append(TableStatus(name, rows, estimated, "hypertable" if name in hypertables else "table"))
    detail = str(ts.get("detail", ""))
    return DatabaseStatus(revision, bool(ts.get("enabled")), detail, tables)
