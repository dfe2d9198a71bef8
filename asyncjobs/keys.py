"""Ed25519 keys for task signing: decoding, reading, generating and writing them in the Go implementation's formats.

A seed is the 32-byte ed25519 seed (Go's ``ed25519.NewKeyFromSeed`` input, the first half of Go's 64-byte
``ed25519.PrivateKey``) and a public key is 32 bytes; both are kept in files as 64 hex digits with no newline,
since Go decodes the whole file with ``hex.DecodeString``. The public names are re-exported by
:mod:`asyncjobs.signing`; ``cryptography`` (the ``signing`` extra) is imported only when a key is made or used.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from asyncjobs.errors import ConfigurationError

if TYPE_CHECKING:
    from types import ModuleType

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "KEY_SIZE",
    "PUBLIC_KEY_FILE_NAME",
    "SEED_FILE_NAME",
    "KeyFiles",
    "KeyPair",
    "generate_key_pair",
    "write_key_pair",
]

KEY_SIZE: Final = 32
"""Bytes in an ed25519 seed and in a public key."""
SEED_FILE_NAME: Final = "signing.seed"
"""The seed file :func:`write_key_pair` writes in a directory (for ``signing_seed_file``; keep it secret)."""
PUBLIC_KEY_FILE_NAME: Final = "signing.pub"
"""The public key file :func:`write_key_pair` writes in a directory (for ``verification_key_file``)."""
SEED_FILE_MODE: Final = 0o600
PUBLIC_KEY_FILE_MODE: Final = 0o644
KEY_DIRECTORY_MODE: Final = 0o700


def ed25519_module() -> ModuleType:
    """The ``cryptography`` ed25519 module.

    Raises:
        ConfigurationError: ``cryptography`` is not installed.
    """
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise ConfigurationError(
            "task signing needs the 'cryptography' package: pip install 'asyncjobs[signing]'"
        ) from exc
    return ed25519


def decode_key(value: bytes | str, *, what: str, allow_raw: bool = True) -> bytearray:
    """Decode a 32-byte key given raw (when allowed) or as 64 hex characters into a buffer the caller can wipe.

    Raises:
        ConfigurationError: the value is neither.
    """
    if allow_raw and isinstance(value, bytes | bytearray) and len(value) == KEY_SIZE:
        return bytearray(value)
    try:
        text = value.decode("ascii") if isinstance(value, bytes | bytearray) else value
        # bytes.fromhex skips whitespace between pairs; a key must be exactly 64 hex digits, no more, no less.
        key = bytearray.fromhex(text.strip()) if len(text.strip()) == 2 * KEY_SIZE else None
    except (UnicodeDecodeError, ValueError):
        key = None
    if key is None or len(key) != KEY_SIZE:
        expected = (
            f"{KEY_SIZE} raw bytes or {2 * KEY_SIZE} hex characters" if allow_raw else f"{2 * KEY_SIZE} hex characters"
        )
        raise ConfigurationError(f"invalid {what}: expected {expected}")
    return key


def read_key_file(path: str | os.PathLike[str], *, what: str) -> bytearray:
    """Read a key file holding 64 hex characters (surrounding whitespace allowed).

    Raises:
        ConfigurationError: the file cannot be read or holds no valid key.
    """
    try:
        content = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the {what} file {os.fspath(path)!r}: {exc}") from exc
    # Key files hold hex, as Go writes and reads them; 32 raw bytes in a file are more likely a mistake.
    return decode_key(content, what=f"{what} in {os.fspath(path)!r}", allow_raw=False)


def public_hex(key: Ed25519PublicKey) -> str:
    """A public key as 64 lowercase hex characters."""
    from cryptography.hazmat.primitives import serialization

    raw: bytes = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


@dataclass(frozen=True, slots=True)
class KeyPair:
    """An ed25519 key pair as hex, in the formats ``ClientOptions`` and the Go implementation accept."""

    seed_hex: str = field(repr=False)
    """The 32-byte seed as 64 lowercase hex digits: ``signing_seed`` (Go ``ed25519.NewKeyFromSeed``). Secret."""
    public_key_hex: str
    """The 32-byte public key as 64 lowercase hex digits: ``verification_key`` (Go's ``TaskVerificationKey``)."""


@dataclass(frozen=True, slots=True)
class KeyFiles:
    """Where :func:`write_key_pair` wrote a key pair."""

    seed_file: Path
    """The seed file, mode 0600: give it to producers as ``signing_seed_file``."""
    public_key_file: Path
    """The public key file: give it to workers as ``verification_key_file``."""
    public_key_hex: str
    """The public key written, as 64 lowercase hex digits."""


def generate_key_pair() -> KeyPair:
    """Generate a new random ed25519 key pair for task signing::

        pair = asyncjobs.signing.generate_key_pair()
        producer = await asyncjobs.connect(url, signing_seed=pair.seed_hex)
        worker = await asyncjobs.connect(url, verification_key=pair.public_key_hex)

    Raises:
        ConfigurationError: ``cryptography`` is not installed (``pip install 'asyncjobs[signing]'``).
    """
    key = ed25519_module().Ed25519PrivateKey.generate()
    from cryptography.hazmat.primitives import serialization

    seed: bytes = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return KeyPair(seed_hex=seed.hex(), public_key_hex=public_hex(key.public_key()))


def write_key_pair(
    directory: str | os.PathLike[str] | None = None,
    *,
    seed_file: str | os.PathLike[str] | None = None,
    public_key_file: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    key_pair: KeyPair | None = None,
) -> KeyFiles:
    """Write a key pair to two files: ``DIRECTORY/signing.seed`` (mode 0600) and ``DIRECTORY/signing.pub``.

    Each file holds 64 hex digits and no newline, the form ``TaskSigner.from_seed_file``,
    ``TaskVerifier.from_public_key_file`` and Go's ``TaskSigningSeedFile`` and ``TaskVerificationKeyFile`` read::

        files = asyncjobs.signing.write_key_pair("/etc/asyncjobs")
        producer = await asyncjobs.connect(url, signing_seed_file=str(files.seed_file))
        worker = await asyncjobs.connect(url, verification_key_file=str(files.public_key_file))

    Args:
        directory: where to write both files under their default names; created (mode 0700) if missing. Give
            either this or both ``seed_file`` and ``public_key_file``.
        seed_file: the seed file's path, instead of ``directory``.
        public_key_file: the public key file's path, instead of ``directory``.
        overwrite: replace existing files (each atomically, so a signer re-reading its seed file never sees a
            partial one); by default an existing file is refused and nothing is written.
        key_pair: the pair to write; by default a new one from :func:`generate_key_pair`.

    Returns:
        The paths written and the public key.

    Raises:
        ConfigurationError: the paths were not given as one of the two forms, a file exists and ``overwrite`` is
            not set, a file cannot be written, ``key_pair`` is malformed, or ``cryptography`` is not installed.
    """
    seed_path, public_path = _key_paths(directory, seed_file, public_key_file)
    if not overwrite:
        for path in (seed_path, public_path):
            if path.exists():
                raise _exists(path)
    if key_pair is None:
        pair = generate_key_pair()
    else:
        pair = key_pair
        decode_key(pair.seed_hex, what="seed of key_pair", allow_raw=False)
        decode_key(pair.public_key_hex, what="public key of key_pair", allow_raw=False)
    if directory is not None:
        try:
            Path(directory).expanduser().mkdir(mode=KEY_DIRECTORY_MODE, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(f"cannot create the key directory {os.fspath(directory)!r}: {exc}") from exc
    _write_key_file(seed_path, pair.seed_hex, SEED_FILE_MODE, overwrite=overwrite)
    try:
        _write_key_file(public_path, pair.public_key_hex, PUBLIC_KEY_FILE_MODE, overwrite=overwrite)
    except ConfigurationError:
        if not overwrite:  # leave no seed without its public key
            with contextlib.suppress(OSError):
                seed_path.unlink()
        raise
    return KeyFiles(seed_file=seed_path, public_key_file=public_path, public_key_hex=pair.public_key_hex)


def _key_paths(
    directory: str | os.PathLike[str] | None,
    seed_file: str | os.PathLike[str] | None,
    public_key_file: str | os.PathLike[str] | None,
) -> tuple[Path, Path]:
    if directory is not None and seed_file is None and public_key_file is None:
        base = Path(directory).expanduser()
        return base / SEED_FILE_NAME, base / PUBLIC_KEY_FILE_NAME
    if directory is None and seed_file is not None and public_key_file is not None:
        seed_path, public_path = Path(seed_file).expanduser(), Path(public_key_file).expanduser()
        if seed_path.resolve() == public_path.resolve():
            raise ConfigurationError(f"seed_file and public_key_file are the same file {seed_path}: give two paths")
        return seed_path, public_path
    raise ConfigurationError(
        "write_key_pair needs a directory, or both seed_file and public_key_file (not a mix of the two)"
    )


def _write_key_file(path: Path, text: str, mode: int, *, overwrite: bool) -> None:
    """Write ``text`` to a new file with exactly ``mode`` (whatever the umask), or atomically replace the file.

    Raises:
        ConfigurationError: the file exists and ``overwrite`` is not set, or it cannot be written.
    """
    data = text.encode("ascii")
    tmp: str | None = None
    try:
        if overwrite:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        else:
            # O_EXCL: a file created since the check above is refused rather than overwritten.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if tmp is not None:
            os.replace(tmp, path)
            tmp = None
    except FileExistsError:
        raise _exists(path) from None
    except OSError as exc:
        raise ConfigurationError(f"cannot write the key file {path}: {exc}: check the directory is writable") from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _exists(path: Path) -> ConfigurationError:
    return ConfigurationError(
        f"{path} already exists: pass overwrite=True (--force on the command line) to replace the key pair, "
        "after which workers holding the old public key refuse newly signed tasks; or write to another directory"
    )
