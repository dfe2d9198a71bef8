"""Ed25519 task signatures, byte-compatible with the Go implementation (docs/protocol.md, Task signatures).

A producer signs a text envelope of the task's immutable fields; every consumer holding the public key checks
it whenever it loads the task. Keys and signatures are hex-encoded like Go's. :func:`generate_key_pair` and
:func:`write_key_pair` make a key pair. The ``cryptography`` package is an optional extra, imported only when a
key, a signer or a verifier is made.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from asyncjobs.errors import ConfigurationError, InvalidSignature, TaskNotSigned

# Key handling lives in asyncjobs.keys; the names below keep their old import paths.
from asyncjobs.keys import KEY_SIZE as KEY_SIZE
from asyncjobs.keys import PUBLIC_KEY_FILE_NAME as PUBLIC_KEY_FILE_NAME
from asyncjobs.keys import SEED_FILE_NAME as SEED_FILE_NAME
from asyncjobs.keys import KeyFiles as KeyFiles
from asyncjobs.keys import KeyPair as KeyPair
from asyncjobs.keys import decode_key as _decode_key
from asyncjobs.keys import ed25519_module as _ed25519
from asyncjobs.keys import generate_key_pair as generate_key_pair
from asyncjobs.keys import public_hex as _public_hex
from asyncjobs.keys import read_key_file as _read_key_file
from asyncjobs.keys import write_key_pair as write_key_pair

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "PUBLIC_KEY_FILE_NAME",
    "SEED_FILE_NAME",
    "KeyFiles",
    "KeyPair",
    "TaskSigner",
    "TaskVerifier",
    "generate_key_pair",
    "signature_envelope",
    "signer_for",
    "verifier_for",
    "write_key_pair",
]

SIGNATURE_SIZE: Final = 64
"""Bytes in an ed25519 signature (128 hex characters)."""
SEED_FILE_CHECK_INTERVAL_S: Final = 1.0
"""Seconds between checks of a seed file for a rotation (one ``os.stat``; the file is re-read only if it changed)."""


def signature_envelope(
    *,
    task_id: str,
    queue: str,
    task_type: str,
    max_tries: int,
    created_ns: int,
    deadline_ns: int | None,
    payload: bytes | None,
) -> bytes:
    """Return the bytes a task signature covers, exactly as the Go implementation builds them.

    The layout is ``id:queue:type:max_tries:created:deadline:payload`` with times as Unix nanoseconds (0 when
    there is no deadline) and the payload as padded standard base64 (empty when there is none).

    Args:
        task_id: the task id.
        queue: the queue the task is enqueued to.
        task_type: the task type.
        max_tries: the task's maximum tries.
        created_ns: the creation time in Unix nanoseconds, exactly as stored (not via a microsecond datetime).
        deadline_ns: the deadline in Unix nanoseconds, or ``None``.
        payload: the raw payload bytes, or ``None``.
    """
    encoded = base64.b64encode(payload).decode("ascii") if payload else ""
    return f"{task_id}:{queue}:{task_type}:{max_tries}:{created_ns}:{deadline_ns or 0}:{encoded}".encode()


class TaskSigner:
    """Signs task envelopes with an ed25519 private key.

    Build it with :meth:`from_seed` or :meth:`from_seed_file`. A signer built from a file notices when the file
    changes, so replacing the file rotates the key without a restart. Unlike Go, which reads the file at every
    signature, the file is checked at most once a second (an ``os.stat``: its modification time, size and inode)
    and read again only when it changed; a rotation takes effect within a second. Replace the file atomically
    (write a new file, then rename it over the old one).
    """

    def __init__(
        self,
        *,
        seed: bytes | str | None = None,
        seed_file: str | os.PathLike[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create a signer from exactly one of ``seed`` and ``seed_file``.

        Args:
            seed: a 32-byte ed25519 seed, raw or as 64 hex characters.
            seed_file: a file holding the seed as 64 hex characters.
            clock: monotonic seconds, for the once-a-second file check (tests pass a fake one).

        Raises:
            ConfigurationError: both or neither were given, the seed is malformed, the file cannot be read,
                or ``cryptography`` is not installed.
        """
        if (seed is None) == (seed_file is None):
            raise ConfigurationError("a task signer needs exactly one of seed and seed_file")
        self._ed25519 = _ed25519()
        self._seed_file = seed_file
        self._clock = clock
        self._file_stamp: tuple[int, int, int] | None = None
        self._checked_at = clock()
        if seed_file is not None:
            self._file_stamp = self._stamp()
        # A file signer loads the key once here so a bad file fails at start-up, not at the first enqueue.
        self._key: Ed25519PrivateKey = self._load(seed)
        self._used: list[Ed25519PublicKey] = [self._key.public_key()]

    @classmethod
    def from_seed(cls, seed: bytes | str) -> TaskSigner:
        """Create a signer from a 32-byte ed25519 seed, raw or as 64 hex characters.

        Raises:
            ConfigurationError: the seed is malformed or ``cryptography`` is not installed.
        """
        return cls(seed=seed)

    @classmethod
    def from_seed_file(cls, path: str | os.PathLike[str]) -> TaskSigner:
        """Create a signer from a file holding the seed as 64 hex characters.

        Raises:
            ConfigurationError: the file cannot be read or holds no valid seed, or ``cryptography`` is not
                installed.
        """
        return cls(seed_file=path)

    def _load(self, seed: bytes | str | None) -> Ed25519PrivateKey:
        if seed is not None:
            raw = _decode_key(seed, what="seed")
        elif self._seed_file is not None:
            raw = _read_key_file(self._seed_file, what="signing seed")
        else:  # pragma: no cover - the constructor requires one of the two
            raise ConfigurationError("a task signer needs exactly one of seed and seed_file")
        try:
            key: Ed25519PrivateKey = self._ed25519.Ed25519PrivateKey.from_private_bytes(bytes(raw))
        finally:
            # Best effort only: Python may hold other copies, but the buffer we own does not linger.
            raw[:] = bytes(len(raw))
        return key

    def _stamp(self) -> tuple[int, int, int] | None:
        """The seed file's modification time, size and inode; ``None`` when it cannot be read."""
        assert self._seed_file is not None
        try:
            st = os.stat(os.path.expanduser(self._seed_file))
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _current_key(self) -> Ed25519PrivateKey:
        """The key to use now: a seed file is re-read when it changed, checked at most once a second.

        Raises:
            ConfigurationError: the seed file changed and can no longer be read, or is malformed.
        """
        if self._seed_file is None:
            return self._key
        now = self._clock()
        if now - self._checked_at < SEED_FILE_CHECK_INTERVAL_S:
            return self._key
        stamp = self._stamp()
        if stamp is None or stamp != self._file_stamp:
            # Read before the stamp is kept: a failed read is retried at the next check, not forgotten.
            self._key = self._load(None)
            self._file_stamp = stamp
            public = self._key.public_key()
            if all(public != used for used in self._used):
                self._used.append(public)
        self._checked_at = now
        return self._key

    @property
    def public_key_hex(self) -> str:
        """The public key matching the key :meth:`sign` uses now, as 64 lowercase hex characters.

        Raises:
            ConfigurationError: the seed file changed and can no longer be read, or is malformed.
        """
        return _public_hex(self._current_key().public_key())

    def public_keys(self) -> tuple[Ed25519PublicKey, ...]:
        """Every public key this signer has signed with since it was built, newest first (a rotated seed file
        leaves tasks signed with the old key in flight)."""
        self._current_key()
        return tuple(reversed(self._used))

    def sign(self, envelope: bytes) -> str:
        """Sign an envelope from :func:`signature_envelope`.

        Returns:
            The signature as 128 lowercase hex characters.

        Raises:
            ConfigurationError: the seed file changed and can no longer be read, or is malformed.
        """
        signature: bytes = self._current_key().sign(envelope)
        return signature.hex()


class TaskVerifier:
    """Checks task signatures against an ed25519 public key."""

    def __init__(self, public_key: bytes | str, *, optional: bool = False) -> None:
        """Create a verifier.

        Args:
            public_key: the public key, 32 raw bytes or 64 hex characters.
            optional: accept tasks without a signature (signed tasks are still checked).

        Raises:
            ConfigurationError: the key is malformed or ``cryptography`` is not installed.
        """
        ed25519 = _ed25519()
        self._exceptions = _crypto_exceptions()
        self._key: Ed25519PublicKey = ed25519.Ed25519PublicKey.from_public_bytes(
            bytes(_decode_key(public_key, what="public key"))
        )
        self.optional: bool = optional
        """Whether unsigned tasks are accepted."""
        self._signer: TaskSigner | None = None

    @classmethod
    def for_signer(cls, signer: TaskSigner, *, optional: bool = False) -> TaskVerifier:
        """A verifier accepting every key ``signer`` has used, so a client signing from a seed file still verifies
        its own tasks after the file is rotated, those signed before the rotation included.
        """
        verifier = cls(signer.public_key_hex, optional=optional)
        verifier._signer = signer
        return verifier

    @classmethod
    def from_public_key(cls, key: bytes | str, *, optional: bool = False) -> TaskVerifier:
        """Create a verifier from a public key, 32 raw bytes or 64 hex characters.

        Raises:
            ConfigurationError: the key is malformed or ``cryptography`` is not installed.
        """
        return cls(key, optional=optional)

    @classmethod
    def from_public_key_file(cls, path: str | os.PathLike[str], *, optional: bool = False) -> TaskVerifier:
        """Create a verifier from a file holding the public key as 64 hex characters.

        Raises:
            ConfigurationError: the file cannot be read or holds no valid key, or ``cryptography`` is not
                installed.
        """
        return cls(bytes(_read_key_file(path, what="verification key")), optional=optional)

    @property
    def public_key_hex(self) -> str:
        """The public key as 64 lowercase hex characters."""
        return _public_hex(self._key)

    def verify(self, envelope: bytes, signature_hex: str | None) -> None:
        """Check a task's signature.

        Args:
            envelope: the task's envelope from :func:`signature_envelope`.
            signature_hex: the task's ``signature`` field; empty or ``None`` when unsigned.

        Raises:
            TaskNotSigned: the task has no signature and signatures are not optional.
            InvalidSignature: the signature is malformed or does not match the envelope and key.
        """
        if not signature_hex:
            if self.optional:
                return
            raise TaskNotSigned("task is not signed")
        try:
            signature = bytes.fromhex(signature_hex)
        except ValueError:
            raise InvalidSignature("invalid task signature") from None
        if len(signature) != SIGNATURE_SIZE or len(signature_hex) != 2 * SIGNATURE_SIZE:
            raise InvalidSignature("invalid task signature")
        keys = (self._key,) if self._signer is None else self._signer.public_keys()
        for key in keys:
            try:
                key.verify(signature, envelope)
            except self._exceptions:
                continue
            return
        raise InvalidSignature("invalid task signature")


def _crypto_exceptions() -> type[Exception]:
    from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature

    return CryptoInvalidSignature


def signer_for(seed: bytes | str | None, seed_file: str | None) -> TaskSigner | None:
    """The signer a client's ``signing_seed`` or ``signing_seed_file`` asks for, if any."""
    if seed is not None:
        return TaskSigner.from_seed(seed)
    if seed_file is not None:
        return TaskSigner.from_seed_file(seed_file)
    return None


def verifier_for(
    key: bytes | str | None, key_file: str | None, signer: TaskSigner | None, *, optional: bool
) -> TaskVerifier | None:
    """The verifier a client's options ask for: its verification key, else its own signer's keys, else none."""
    if key is not None:
        return TaskVerifier.from_public_key(key, optional=optional)
    if key_file is not None:
        return TaskVerifier.from_public_key_file(key_file, optional=optional)
    if signer is not None:
        # Go documents that a signing seed (or seed file) also verifies but never does (docs/decisions.md, Quirks of
        # the Go implementation, item 10); we do, with every key the signer has used, so a rotated seed file does
        # not reject the client's own tasks.
        return TaskVerifier.for_signer(signer, optional=optional)
    return None
