"""The Fernet keys that encrypt secrets in the database, newest first."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from db.crypto import Keyring, generate_key

DOCS_URL = "https://docs.prefect.io/v3/concepts/blocks"


class EncryptionKeys(Block):
    """Fernet keys (MultiFernet) for secrets stored in the database. The first key encrypts; all decrypt."""

    _block_type_name = "Strategy Engine Encryption Keys"
    _block_type_slug = "se-encryption-keys"
    _description = "Fernet keys, newest first, that encrypt exchange credentials stored in the database."
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _code_example = """```python
from blocks import EncryptionKeys

keys = EncryptionKeys.load("BLOCK_NAME")
keyring = keys.keyring()
```"""

    keys: list[SecretStr] = Field(
        ...,
        min_length=1,
        description="Fernet keys, newest first; the first encrypts new values and all of them decrypt.",
        examples=[["<fernet key from `strategy-engine keys generate`>"]],
    )

    @field_validator("keys")
    @classmethod
    def _valid_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        Keyring(value)  # raises ConfigurationError naming the bad position
        return value

    def keyring(self) -> Keyring:
        """A Keyring over these keys."""
        return Keyring(self.keys)

    def with_new_key(self) -> EncryptionKeys:
        """A copy with a freshly generated key in front (it becomes the encrypting key)."""
        return EncryptionKeys(keys=[generate_key(), *self.keys])

    def newest_only(self) -> EncryptionKeys:
        """A copy keeping only the newest key (after `keys rotate` re-encrypted everything)."""
        return EncryptionKeys(keys=self.keys[:1])
