"""Secrets at rest: gateway tokens, instances' webhook secrets and tenants'
callback signing secrets are stored encrypted with Fernet (AES-128-CBC with an
HMAC-SHA256, from ``cryptography``).

The keys come from BILLING_ENCRYPTION_KEYS, comma-separated: the first one
encrypts, every one decrypts (a MultiFernet). Rotating is therefore: put a new
key first, keep the old ones after it, run ``billing secrets rotate``, then drop
the old keys. Each process installs its keys once at wiring
(:func:`configure`); the :class:`EncryptedField` columns use them on every
read and write.

Without the setting, a SQLite database keeps a key of its own in a file next
to it (``<database>.key``, mode 0600), made on first use: the embedded mode
then works with nothing to configure. PostgreSQL mode refuses to start instead:
a shared production database must not fall back to plaintext, nor to a key
that lives on one machine.
"""
from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Sequence

import peewee
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from billing.errors import ServiceUnavailable

#: The environment setting that holds the keys (named in every error).
KEYS_SETTING = "BILLING_ENCRYPTION_KEYS"

#: Marks a stored value as ciphertext. A value without it is plaintext left
#: from before migration 4 (read as is; the migration encrypts it).
ENCRYPTED_PREFIX = "fernet:"

#: Next to a SQLite database file: the key file made when the setting is unset.
LOCAL_KEY_SUFFIX = ".key"

#: Only the owner may read the local key file (and the database beside it).
OWNER_ONLY = 0o600

#: What a caller is told when stored secrets cannot be read (the operator's
#: detail, naming the setting, goes to the log and the CLI).
UNREADABLE_MESSAGE = "the service cannot read its stored secrets; its operator must fix its encryption keys"


class EncryptionMisconfigured(ServiceUnavailable):
    """The encryption keys are missing, malformed, or do not open a stored value.

    A 503 to a web caller (with no detail), one line naming
    BILLING_ENCRYPTION_KEYS in the CLI and the logs.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(UNREADABLE_MESSAGE, detail=detail)

    def __str__(self) -> str:
        # What a process refusing to start (gunicorn, a worker) prints last.
        return self.detail


_lock = threading.Lock()
_keyring: MultiFernet | None = None
_primary: Fernet | None = None
#: The key of in-memory SQLite databases without the setting (one per process).
_memory_key: str | None = None


def generate_key() -> str:
    """A new random Fernet key (url-safe base64 text), as BILLING_ENCRYPTION_KEYS takes it."""
    return Fernet.generate_key().decode()


def install(keys: Sequence[str]) -> None:
    """Use ``keys`` for every encrypted column of this process.

    Parameters:
      keys: Fernet keys; the first encrypts, all decrypt.

    Raises:
      EncryptionMisconfigured: no key, or one that is not a Fernet key.
    """
    global _keyring, _primary
    if not keys:
        raise EncryptionMisconfigured(f"{KEYS_SETTING} holds no key")
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key.strip().encode()))
        except (ValueError, TypeError):
            raise EncryptionMisconfigured(
                f"{KEYS_SETTING}: key {position} is not a Fernet key (32 url-safe base64-encoded bytes; "
                "`billing secrets generate-key` makes one)"
            ) from None
    with _lock:
        _keyring, _primary = MultiFernet(fernets), fernets[0]


def configure(*, keys: Sequence[str], database_url: str) -> None:
    """Install this process's keys at wiring: the setting's, else (SQLite)
    the database's own local key, else refuse.

    Parameters:
      keys: the keys BILLING_ENCRYPTION_KEYS names (may be empty).
      database_url: the database whose secrets they open.

    Raises:
      EncryptionMisconfigured: PostgreSQL without keys; a malformed key; a
        local key file that cannot be read or made.
    """
    install(keys or (_local_key(database_url),))


def _local_key(database_url: str) -> str:
    """The key of a SQLite database when the setting is unset."""
    global _memory_key
    if not database_url.startswith("sqlite"):
        raise EncryptionMisconfigured(
            f"{KEYS_SETTING} is not set: a PostgreSQL deployment needs its own encryption key for the secrets it "
            "stores (gateway tokens, webhook and callback secrets); make one with `billing secrets generate-key` "
            "and give every process the same value"
        )
    path = database_url.split(":///", 1)[1] if ":///" in database_url else ""
    if not path or path == ":memory:":
        with _lock:
            _memory_key = _memory_key or generate_key()
            return _memory_key
    return load_or_create_key_file(path + LOCAL_KEY_SUFFIX)


def load_or_create_key_file(path: str) -> str:
    """The key kept in ``path``; made (mode 0600) when the file is missing.

    Two processes starting at once agree on one key: the key is written to a
    private temporary file first, then linked into place, which fails for the
    second one; that one reads the winner's key.

    Parameters:
      path: the key file.

    Raises:
      EncryptionMisconfigured: the file cannot be read or made, or holds no key.
    """
    try:
        with open(path, encoding="ascii") as handle:
            return _checked_file_key(handle.read().strip(), path=path)
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as exc:
        raise EncryptionMisconfigured(f"cannot read the local encryption key {path}: {exc}; set {KEYS_SETTING}") from None
    key = generate_key()
    temporary = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OWNER_ONLY)
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(key + "\n")
        try:
            os.link(temporary, path)
        except FileExistsError:  # another process made it first: use its key
            with open(path, encoding="ascii") as handle:
                return _checked_file_key(handle.read().strip(), path=path)
    except OSError as exc:
        raise EncryptionMisconfigured(f"cannot create the local encryption key {path}: {exc}; set {KEYS_SETTING}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
    return key


def _checked_file_key(text: str, *, path: str) -> str:
    if not text:
        raise EncryptionMisconfigured(f"the local encryption key {path} is empty; restore it or set {KEYS_SETTING}")
    return text


def _fernets() -> tuple[MultiFernet, Fernet]:
    if _keyring is None or _primary is None:
        raise EncryptionMisconfigured(f"no encryption key is installed in this process; set {KEYS_SETTING}")
    return _keyring, _primary


def is_encrypted(stored: str | None) -> bool:
    """Whether a stored value is ciphertext (rather than empty or legacy plaintext)."""
    return bool(stored) and stored.startswith(ENCRYPTED_PREFIX)


def encrypt(plain: str) -> str:
    """``plain`` as stored: empty stays empty (nothing to hide), anything
    else becomes prefixed ciphertext under the first key.

    Parameters:
      plain: the secret.
    """
    if not plain:
        return plain
    keyring, _ = _fernets()
    return ENCRYPTED_PREFIX + keyring.encrypt(plain.encode()).decode()


def decrypt(stored: str) -> str:
    """The secret a stored value holds.

    Parameters:
      stored: a column's value: ciphertext, empty, or legacy plaintext.

    Raises:
      EncryptionMisconfigured: no installed key opens the ciphertext.
    """
    if not is_encrypted(stored):
        return stored
    keyring, _ = _fernets()
    try:
        return keyring.decrypt(stored.removeprefix(ENCRYPTED_PREFIX).encode()).decode()
    except InvalidToken:
        raise EncryptionMisconfigured(
            f"a stored secret does not open with any key of {KEYS_SETTING} (a key was removed too early, or the "
            "setting differs between processes)"
        ) from None


def under_primary(stored: str) -> bool:
    """Whether ciphertext is already encrypted with the first key (rotation skips it).

    Parameters:
      stored: an encrypted value.
    """
    _, primary = _fernets()
    try:
        primary.decrypt(stored.removeprefix(ENCRYPTED_PREFIX).encode())
    except InvalidToken:
        return False
    return True


def reencrypt(stored: str) -> str:
    """A stored value as it should be stored now: plaintext encrypted, and
    ciphertext under an older key re-encrypted with the first one; empty
    values and ciphertext under the first key come back unchanged.

    Parameters:
      stored: a column's value.

    Raises:
      EncryptionMisconfigured: no installed key opens the ciphertext.
    """
    if not stored:
        return stored
    if not is_encrypted(stored):
        return encrypt(stored)
    if under_primary(stored):
        return stored
    return encrypt(decrypt(stored))


class EncryptedField(peewee.TextField):
    """A text column stored encrypted: encrypted on write, decrypted on read.

    Text, whatever the secret's length: ciphertext is about 1.4 times the
    secret plus 100 characters. Never compare it in a query (each write
    encrypts anew); look rows up by another column.
    """

    def db_value(self, value):
        if value is None:
            return None
        return encrypt(value)

    def python_value(self, value):
        if value is None:
            return None
        return decrypt(value)
