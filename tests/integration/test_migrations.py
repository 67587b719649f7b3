from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from db.engine import make_engine
from db.migrate import current_revision, downgrade, head_revision, require_head, upgrade
from db.schema import metadata
from domain.errors import SchemaBehindError
from tests.conftest import create_scratch_database, drop_scratch_database

pytestmark = pytest.mark.integration


def test_upgrade_downgrade_upgrade_round_trip() -> None:
    name, url = create_scratch_database("se_migr")
    engine = make_engine(url)
    try:
        assert current_revision(engine) is None
        with pytest.raises(SchemaBehindError, match="strategy-engine db upgrade"):
            require_head(engine)

        upgrade(engine)
        assert current_revision(engine) == head_revision()
        require_head(engine)
        tables = set(inspect(engine).get_table_names())
        assert set(metadata.tables) <= tables

        downgrade(engine, "base")
        assert current_revision(engine) is None
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}

        upgrade(engine)
        upgrade(engine)  # idempotent at head
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
        drop_scratch_database(name)


def test_schema_behind_message_names_both_revisions() -> None:
    name, url = create_scratch_database("se_migr")
    engine = make_engine(url)
    try:
        upgrade(engine, "0001")
        with engine.connect() as conn:
            assert conn.execute(text("select version_num from alembic_version")).scalar_one() == "0001"
        if head_revision() == "0001":
            require_head(engine)
        else:
            with pytest.raises(SchemaBehindError, match="0001"):
                require_head(engine)
    finally:
        engine.dispose()
        drop_scratch_database(name)


def test_candles_primary_key_is_the_series_and_time(engine) -> None:
    pk = inspect(engine).get_pk_constraint("candles")
    assert pk["constrained_columns"] == ["exchange", "symbol", "timeframe", "ts"]
