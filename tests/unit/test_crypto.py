from __future__ import annotations

import pytest
from pydantic import SecretStr

from db.crypto import Ciphertext, Keyring, Location, generate_key, key_fingerprint
from domain.errors import ConfigurationError, DecryptionError

WHERE = Location("exchange_credentials", "api_key", 7)


def test_round_trip_string_and_json() -> None:
    ring = Keyring([generate_key()])
    ct = ring.encrypt_str("s3cr3t")
    assert b"s3cr3t" not in ct.token
    assert ring.decrypt_str(ct, WHERE).get_secret_value() == "s3cr3t"
    doc = {"uid": "abc", "nested": [1, 2]}
    assert ring.decrypt_json(ring.encrypt_json(doc), WHERE) == doc


def test_older_keys_still_decrypt_and_rotate_moves_to_newest() -> None:
    old, new = generate_key(), generate_key()
    ct_old = Keyring([old]).encrypt_str("value")
    ring = Keyring([new, old])
    assert ring.decrypt_str(ct_old, WHERE).get_secret_value() == "value"
    rotated = ring.rotate(ct_old, WHERE)
    assert Keyring([new]).decrypt_str(rotated, WHERE).get_secret_value() == "value"
    with pytest.raises(DecryptionError):
        Keyring([old]).decrypt_str(rotated, WHERE)


def test_wrong_key_names_table_column_and_row() -> None:
    ct = Keyring([generate_key()]).encrypt_str("pl41nt3xt")
    with pytest.raises(DecryptionError, match=r"exchange_credentials\.api_key of row 7") as info:
        Keyring([generate_key()]).decrypt_str(ct, WHERE)
    assert "pl41nt3xt" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_tampered_ciphertext_is_refused() -> None:
    ring = Keyring([generate_key()])
    token = bytearray(ring.encrypt_str("value").token)
    token[40] = ord("A") if token[40] != ord("A") else ord("B")
    with pytest.raises(DecryptionError):
        ring.decrypt_str(Ciphertext(bytes(token)), WHERE)


def test_no_key_and_bad_key_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="keys generate"):
        Keyring([])
    with pytest.raises(ConfigurationError, match="key 2 is not a valid Fernet key"):
        Keyring([generate_key(), SecretStr("not-a-key")])


def test_reprs_never_show_secrets() -> None:
    key = generate_key()
    ring = Keyring([key])
    ct = ring.encrypt_str("hunter2")
    assert key.get_secret_value() not in repr(ring)
    assert ct.token.decode() not in repr(ct)
    assert key_fingerprint(key) == ring.primary_id and len(ring.primary_id) == 12
