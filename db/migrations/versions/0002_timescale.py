"""timescale or plain storage

TimescaleDB when the server has it (hypertables, compression, continuous aggregates), else plain PostgreSQL
with a BRIN index and date_bin views. All the SQL lives in db/timescale.py.

Everything runs inside the migration's transaction: continuous aggregates are created WITH NO DATA (only
a refresh must run outside a transaction, and the refresh policies or `refresh_aggregates` do that later).
So an Alembic autocommit block is not needed, and a failure rolls the whole revision back.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 20:30:00
"""

from __future__ import annotations

from alembic import op

from db.timescale import apply_plain, apply_timescale, remove_storage, timescale_available, try_create_extension

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    if timescale_available(conn) and try_create_extension(conn):
        apply_timescale(conn)
    else:
        apply_plain(conn)


def downgrade() -> None:
    # Hypertables become plain tables again (data kept), so 0001's downgrade and a re-upgrade both work.
    remove_storage(op.get_bind())
