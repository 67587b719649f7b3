"""Fernet encryption of secrets at rest.

Keys come newest first (MultiFernet): the first encrypts, all decrypt. Each encrypted row records `key_id`,
the fingerprint of the key that wrote it, so rotation knows which rows still need re-encrypting and can
resume after an interruption.

The column types `EncryptedString` and `EncryptedJSON` accept only `Ciphertext` values: plain text cannot
reach the database through them by accident. Encryption and decryption need a `Keyring`, passed explicitly
(no global key).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr
from sqlalchemy import LargeBinary
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from domain.errors import ConfigurationError, DecryptionError


@dataclass(frozen=True, slots=True)
class Ciphertext:
    """A Fernet token as stored in the database. Its repr never shows the token."""

    token: bytes

    def __repr__(self) -> str:
        return f"Ciphertext(<{len(self.token)} bytes>)"


@dataclass(frozen=True, slots=True)
class Location:
    """Where a ciphertext lives, so a decryption failure can name it."""

    table: str
    column: str
    row_id: object


def key_fingerprint(key: SecretStr | str) -> str:
    """A short, non-reversible identifier of a Fernet key (first 12 hex chars of SHA-256)."""
    raw = key.get_secret_value() if isinstance(key, SecretStr) else key
    return hashlib.sha256(raw.encode()).hexdigest()[:12]


def generate_key() -> SecretStr:
    """A new random Fernet key."""
    return SecretStr(Fernet.generate_key().decode())


class Keyring:
    """Fernet keys newest first. Encrypts with the newest, decrypts with any."""

    def __init__(self, keys: Sequence[SecretStr]) -> None:
        if not keys:
            raise ConfigurationError("no encryption key configured: run `strategy-engine keys generate`")
        fernets: list[Fernet] = []
        for position, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key.get_secret_value()))
            except ValueError:
                raise ConfigurationError(f"encryption key {position} is not a valid Fernet key") from None
        self._multi = MultiFernet(fernets)
        self._fingerprints = [key_fingerprint(k) for k in keys]

    def __repr__(self) -> str:
        return f"Keyring(keys={len(self._fingerprints)}, primary={self.primary_id})"

    @property
    def primary_id(self) -> str:
        """Fingerprint of the key new ciphertexts are written with."""
        return self._fingerprints[0]

    @property
    def key_ids(self) -> list[str]:
        return list(self._fingerprints)

    def encrypt_str(self, plaintext: str) -> Ciphertext:
        return Ciphertext(self._multi.encrypt(plaintext.encode()))

    def encrypt_json(self, value: Any) -> Ciphertext:
        return Ciphertext(self._multi.encrypt(json.dumps(value, separators=(",", ":")).encode()))

    def decrypt_str(self, ciphertext: Ciphertext, where: Location) -> SecretStr:
        return SecretStr(self._decrypt(ciphertext, where).decode())

    def decrypt_json(self, ciphertext: Ciphertext, where: Location) -> Any:
        return json.loads(self._decrypt(ciphertext, where))

    def rotate(self, ciphertext: Ciphertext, where: Location) -> Ciphertext:
        """Re-encrypt under the newest key (decrypting with whichever key wrote it)."""
        try:
            return Ciphertext(self._multi.rotate(ciphertext.token))
        except InvalidToken:
            raise _decryption_error(where) from None

    def encrypt_many(self, plaintexts: Iterable[str | None]) -> list[Ciphertext | None]:
        """Bulk encryption for many rows; None stays None."""
        return [None if p is None else self.encrypt_str(p) for p in plaintexts]

    def decrypt_many(self, ciphertexts: Iterable[tuple[Ciphertext | None, Location]]) -> list[SecretStr | None]:
        """Bulk decryption; the first failure raises DecryptionError naming its table, column and row."""
        return [None if c is None else self.decrypt_str(c, where) for c, where in ciphertexts]

    def _decrypt(self, ciphertext: Ciphertext, where: Location) -> bytes:
        try:
            return self._multi.decrypt(ciphertext.token)
        except InvalidToken:
            raise _decryption_error(where) from None


def _decryption_error(where: Location) -> DecryptionError:
    return DecryptionError(
        f"cannot decrypt {where.table}.{where.column} of row {where.row_id}: no configured key opens it "
        "(wrong or missing key, or the value was tampered with). Add the key it was written with to the "
        "keyring (newest first) and retry."
    )


class _EncryptedBase(TypeDecorator[Ciphertext]):
    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> bytes | None:
        if value is None:
            return None
        if not isinstance(value, Ciphertext):
            raise TypeError(
                f"{type(self).__name__} columns take Ciphertext (encrypt with a Keyring first), "
                f"not {type(value).__name__}"
            )
        return value.token

    def process_result_value(self, value: Any, dialect: Dialect) -> Ciphertext | None:
        if value is None:
            return None
        return Ciphertext(bytes(value))


class EncryptedString(_EncryptedBase):
    """A secret string, stored as a Fernet token."""

    cache_ok = True


class EncryptedJSON(_EncryptedBase):
    """A JSON document, stored as a Fernet token."""

    cache_ok = True
