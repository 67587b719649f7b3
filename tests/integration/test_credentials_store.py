from __future__ import annotations

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, insert, select

from db.crypto import Keyring, generate_key
from db.schema import exchange_credentials
from db.secrets import (
    ExchangeCredentials,
    add_credentials,
    count_stale_rows,
    list_credentials,
    load_credentials,
    remove_credentials,
    rotate_keys,
)
from domain.errors import DecryptionError, InvalidDataError

pytestmark = pytest.mark.integration


def _creds(name: str, n: int = 0) -> ExchangeCredentials:
    return ExchangeCredentials(
        name=name,
        exchange="binance",
        api_key=SecretStr(f"key-{n}"),
        secret=SecretStr(f"secret-{n}"),
        password=SecretStr(f"pw-{n}") if n % 2 else None,
        extra={"uid": n} if n % 3 == 0 else {},
    )


def _bulk_insert(engine: Engine, ring: Keyring, start: int, count: int) -> None:
    rows = []
    for n in range(start, start + count):
        c = _creds(f"acct-{n}", n)
        rows.append(
            {
                "name": c.name,
                "exchange": c.exchange,
                "api_key": ring.encrypt_str(c.api_key.get_secret_value()),
                "api_secret": ring.encrypt_str(c.secret.get_secret_value()),
                "password": None if c.password is None else ring.encrypt_str(c.password.get_secret_value()),
                "extra": ring.encrypt_json(c.extra) if c.extra else None,
                "key_id": ring.primary_id,
            }
        )
    with engine.begin() as conn:
        conn.execute(insert(exchange_credentials), rows)


def test_add_list_load_remove(db: Engine) -> None:
    ring = Keyring([generate_key()])
    add_credentials(db, ring, _creds("main", 3))
    with pytest.raises(InvalidDataError, match="already exist"):
        add_credentials(db, ring, _creds("main", 4))
    add_credentials(db, ring, _creds("main", 5), replace=True)
    [summary] = list_credentials(db)
    assert summary.name == "main" and summary.key_id == ring.primary_id
    assert "secret" not in repr(summary)
    loaded = load_credentials(db, ring, "main")
    assert loaded.api_key.get_secret_value() == "key-5"
    assert loaded.password is not None and loaded.password.get_secret_value() == "pw-5"
    assert "key-5" not in repr(loaded)
    with db.connect() as conn:
        raw = conn.execute(select(exchange_credentials.c.api_key)).scalar_one()
    assert b"key-5" not in raw.token
    assert remove_credentials(db, "main") and not remove_credentials(db, "main")


def test_plaintext_cannot_be_written_to_an_encrypted_column(db: Engine) -> None:
    with pytest.raises(Exception, match="take Ciphertext"), db.begin() as conn:
        conn.execute(
            insert(exchange_credentials).values(
                name="x", exchange="binance", api_key="plain", api_secret="plain", key_id="k"
            )
        )


@pytest.mark.slow
def test_rotation_of_10000_rows_written_under_two_older_keys(db: Engine) -> None:
    k1, k2, k3 = generate_key(), generate_key(), generate_key()
    _bulk_insert(db, Keyring([k1]), 0, 5_000)
    _bulk_insert(db, Keyring([k2, k1]), 5_000, 5_000)
    ring = Keyring([k3, k2, k1])
    assert count_stale_rows(db, ring) == {"exchange_credentials": 10_000}

    report = rotate_keys(db, ring, batch_size=1_000)
    assert report.rotated == 10_000 and report.batches == 10
    assert count_stale_rows(db, ring) == {"exchange_credentials": 0}

    only_newest = Keyring([k3])  # the older keys can now be dropped
    for n in (0, 1, 4_999, 5_000, 7_777, 9_999):
        c = load_credentials(db, only_newest, f"acct-{n}")
        assert c.api_key.get_secret_value() == f"key-{n}"
        assert c.secret.get_secret_value() == f"secret-{n}"
        assert (c.password is None) == (n % 2 == 0)
        assert c.extra == ({"uid": n} if n % 3 == 0 else {})
    assert rotate_keys(db, ring).rotated == 0


def test_interrupted_rotation_resumes_without_loss(db: Engine) -> None:
    old, new = generate_key(), generate_key()
    _bulk_insert(db, Keyring([old]), 0, 1_000)
    ring = Keyring([new, old])

    class Interrupted(Exception):
        pass

    def stop_after_third(_table: str, _rows: int, seen: list[int] = []) -> None:  # noqa: B006
        seen.append(1)
        if len(seen) == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        rotate_keys(db, ring, batch_size=100, on_batch=stop_after_third)
    assert count_stale_rows(db, ring) == {"exchange_credentials": 700}
    assert rotate_keys(db, ring, batch_size=100).rotated == 700
    for n in range(0, 1_000, 97):
        assert load_credentials(db, Keyring([new]), f"acct-{n}").secret.get_secret_value() == f"secret-{n}"


def test_wrong_key_names_the_row(db: Engine) -> None:
    add_credentials(db, Keyring([generate_key()]), _creds("main"))
    with pytest.raises(DecryptionError, match=r"exchange_credentials\.api_key of row 1"):
        load_credentials(db, Keyring([generate_key()]), "main")
    with pytest.raises(DecryptionError, match=r"exchange_credentials\.api_key of row 1"):
        rotate_keys(db, Keyring([generate_key()]))
