"""Re-encrypting the stored secrets: migration 4 (plaintext to ciphertext) and
``billing secrets rotate`` (every secret under the first key).

Both walk each encrypted column (every :class:`EncryptedField` of the models)
in batches of rows, by id, one short transaction per batch, and write a row
only when its value changes and still holds what was read: a secret written
meanwhile (a new token, a rotated callback secret) is never overwritten with
an older one. Running either again does nothing more.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import peewee

from billing.adapters import encryption
from billing.adapters.db import write_transaction

#: Rows read and rewritten per transaction.
DEFAULT_BATCH_SIZE = 500


@dataclass(frozen=True)
class ColumnReport:
    """What a pass did to one column.

    Parameters:
      column: ``table.column``.
      rewritten: values written anew (encrypted, or re-encrypted with the first key).
      unchanged: values already as they should be (empty ones included).
    """

    column: str
    rewritten: int
    unchanged: int


def encrypted_columns() -> Iterator[tuple[type[peewee.Model], peewee.Field]]:
    """Every encrypted column of the models, as (model, field)."""
    from billing.adapters.models import ALL_MODELS  # the models import encryption; not the other way round

    for model in ALL_MODELS:
        for field in model._meta.sorted_fields:
            if isinstance(field, encryption.EncryptedField):
                yield model, field


def rewrite_all(transform: Callable[[str], str], *, batch_size: int = DEFAULT_BATCH_SIZE) -> list[ColumnReport]:
    """Apply ``transform`` to the stored (raw) value of every encrypted column.

    Parameters:
      transform: the stored value to write for a stored value.
      batch_size: rows per transaction.

    Raises:
      EncryptionMisconfigured: a stored value does not open with the keys.
    """
    return [rewrite_column(model, field, transform, batch_size=batch_size) for model, field in encrypted_columns()]


def rotate(*, batch_size: int = DEFAULT_BATCH_SIZE) -> list[ColumnReport]:
    """Re-encrypt every secret with the first key of BILLING_ENCRYPTION_KEYS
    (and encrypt any plaintext left).

    Parameters:
      batch_size: rows per transaction.

    Raises:
      EncryptionMisconfigured: a stored value does not open with the keys.
    """
    return rewrite_all(encryption.reencrypt, batch_size=batch_size)


def encrypt_plaintext(stored: str) -> str:
    """A stored value with plaintext encrypted (migration 4); ciphertext and
    empty values come back unchanged.

    Parameters:
      stored: a column's value.
    """
    if not stored or encryption.is_encrypted(stored):
        return stored
    return encryption.encrypt(stored)


def rewrite_column(model: type[peewee.Model], field: peewee.Field, transform: Callable[[str], str], *,
                   batch_size: int = DEFAULT_BATCH_SIZE) -> ColumnReport:
    """Apply ``transform`` to the stored (raw) values of one column, a batch
    of rows per transaction.

    Parameters:
      model: the table's model.
      field: the column.
      transform: the stored value to write for a stored value.
      batch_size: rows per transaction.
    """
    # The raw text, not the field's decrypted value: coerce(False) skips the
    # field's converter, and Value(..., converter=False) keeps db_value off
    # what we write and compare.
    raw = peewee.fn.COALESCE(field, "").coerce(False)
    key = model._meta.primary_key
    rewritten = unchanged = 0
    last = None
    while True:
        with write_transaction():
            query = model.select(key, raw).order_by(key).limit(batch_size)
            if last is not None:
                query = query.where(key > last)
            rows = list(query.tuples())
            for row_id, stored in rows:
                new = transform(stored)
                if new == stored:
                    unchanged += 1
                    continue
                rewritten += model.update({field: peewee.Value(new, converter=False)}).where(
                    (key == row_id) & (field == peewee.Value(stored, converter=False))
                ).execute()
        if len(rows) < batch_size:
            return ColumnReport(column=f"{model._meta.table_name}.{field.column_name}", rewritten=rewritten,
                                unchanged=unchanged)
        last = rows[-1][0]
