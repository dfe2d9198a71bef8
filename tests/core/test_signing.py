"""Ed25519 task signatures against the docs/protocol.md, Task signatures fixture."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from asyncjobs import signing
from asyncjobs.errors import ConfigurationError, InvalidSignature, SignatureError, TaskNotSigned
from asyncjobs.signing import SEED_FILE_CHECK_INTERVAL_S, TaskSigner, TaskVerifier, signature_envelope

SEED_HEX = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
PUBLIC_HEX = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
PAYLOAD = b'{"to":"user@example.net","subject":"hi"}'
ENVELOPE = (
    b"3GqtCeloEv8f4pnECKClET4Svy0:EMAIL:email:new:10:1784710800123456789:0:"
    b"eyJ0byI6InVzZXJAZXhhbXBsZS5uZXQiLCJzdWJqZWN0IjoiaGkifQ=="
)
SIGNATURE = (
    "b63e77a2fd163baf0b4b86fd123f46295defc53cc1952f9b8822c55c431395eb"
    "3fdde0241aee0208b979a994bf3c497cf3f969b03425101cb9474048aa62300e"
)
OTHER_SEED_HEX = "ff" * 32


def _fixture_envelope(**changes: object) -> bytes:
    fields: dict[str, object] = {
        "task_id": "3GqtCeloEv8f4pnECKClET4Svy0",
        "queue": "EMAIL",
        "task_type": "email:new",
        "max_tries": 10,
        "created_ns": 1_784_710_800_123_456_789,
        "deadline_ns": None,
        "payload": PAYLOAD,
    }
    fields.update(changes)
    return signature_envelope(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, ENVELOPE),
        ({"payload": None}, b"3GqtCeloEv8f4pnECKClET4Svy0:EMAIL:email:new:10:1784710800123456789:0:"),
        ({"payload": b""}, b"3GqtCeloEv8f4pnECKClET4Svy0:EMAIL:email:new:10:1784710800123456789:0:"),
        (
            {"deadline_ns": 1_784_714_400_000_000_000, "payload": b"a"},
            b"3GqtCeloEv8f4pnECKClET4Svy0:EMAIL:email:new:10:1784710800123456789:1784714400000000000:YQ==",
        ),
        (
            {"deadline_ns": 0, "payload": b"ab"},
            b"3GqtCeloEv8f4pnECKClET4Svy0:EMAIL:email:new:10:1784710800123456789:0:YWI=",
        ),
    ],
)
def test_envelope(changes: dict[str, object], expected: bytes) -> None:
    assert _fixture_envelope(**changes) == expected


@pytest.mark.parametrize("seed", [SEED_HEX, SEED_HEX.upper(), SEED_HEX.encode(), bytes.fromhex(SEED_HEX)])
def test_fixture_signature(seed: str | bytes) -> None:
    signer = TaskSigner.from_seed(seed)
    assert signer.public_key_hex == PUBLIC_HEX
    assert signer.sign(ENVELOPE) == SIGNATURE


@pytest.mark.parametrize("key", [PUBLIC_HEX, PUBLIC_HEX.encode(), bytes.fromhex(PUBLIC_HEX)])
def test_fixture_verifies(key: str | bytes) -> None:
    verifier = TaskVerifier.from_public_key(key)
    assert verifier.public_key_hex == PUBLIC_HEX
    verifier.verify(ENVELOPE, SIGNATURE)
    verifier.verify(ENVELOPE, SIGNATURE.upper())


@pytest.mark.parametrize(
    "envelope",
    [
        _fixture_envelope(max_tries=11),
        _fixture_envelope(queue="OTHER"),
        _fixture_envelope(created_ns=1_784_710_800_123_456_000),
        _fixture_envelope(deadline_ns=1),
        _fixture_envelope(payload=b'{"to":"root@example.net","subject":"hi"}'),
        ENVELOPE + b"x",
    ],
)
def test_tampered_envelopes_fail(envelope: bytes) -> None:
    with pytest.raises(InvalidSignature, match="invalid task signature"):
        TaskVerifier(PUBLIC_HEX).verify(envelope, SIGNATURE)


@pytest.mark.parametrize(
    "signature",
    [
        "00" * 64,
        SIGNATURE[:-2],
        SIGNATURE + "00",
        SIGNATURE[:-1] + "g",
        " " + SIGNATURE[1:],
        SIGNATURE[:2] + " " + SIGNATURE[2:-1],
        "not hex",
    ],
)
def test_malformed_or_wrong_signatures_fail(signature: str) -> None:
    with pytest.raises(InvalidSignature, match="invalid task signature"):
        TaskVerifier(PUBLIC_HEX).verify(ENVELOPE, signature)


def test_signature_from_another_key_fails() -> None:
    signature = TaskSigner.from_seed(OTHER_SEED_HEX).sign(ENVELOPE)
    with pytest.raises(InvalidSignature):
        TaskVerifier(PUBLIC_HEX, optional=True).verify(ENVELOPE, signature)


@pytest.mark.parametrize(
    ("optional", "signature", "error"),
    [
        (False, None, TaskNotSigned),
        (False, "", TaskNotSigned),
        (False, SIGNATURE, None),
        (True, None, None),
        (True, "", None),
        (True, SIGNATURE, None),
        (True, "00" * 64, InvalidSignature),
    ],
)
def test_required_and_optional_signatures(
    optional: bool, signature: str | None, error: type[SignatureError] | None
) -> None:
    verifier = TaskVerifier.from_public_key(PUBLIC_HEX, optional=optional)
    if error is None:
        verifier.verify(ENVELOPE, signature)
    else:
        with pytest.raises(error):
            verifier.verify(ENVELOPE, signature)


def test_unsigned_message() -> None:
    with pytest.raises(TaskNotSigned, match=r"^task is not signed$"):
        TaskVerifier(PUBLIC_HEX).verify(ENVELOPE, None)


class FakeClock:
    """Monotonic seconds that only move when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _rotate(path: Path, content: str) -> None:
    # As an operator should: write a new file, then rename it over the old one.
    fresh = path.with_suffix(".new")
    fresh.write_text(content)
    os.replace(fresh, path)


def test_seed_file_rotation_is_picked_up(tmp_path: Path) -> None:
    seed_file = tmp_path / "seed"
    seed_file.write_text(SEED_HEX + "\n")
    clock = FakeClock()
    signer = TaskSigner(seed_file=seed_file, clock=clock)
    assert signer.sign(ENVELOPE) == SIGNATURE
    assert signer.public_key_hex == PUBLIC_HEX

    # Rotating the file changes the key within a second, without a new signer.
    _rotate(seed_file, OTHER_SEED_HEX)
    other = TaskSigner.from_seed(OTHER_SEED_HEX)
    clock.now += SEED_FILE_CHECK_INTERVAL_S
    assert signer.sign(ENVELOPE) == other.sign(ENVELOPE)
    assert signer.public_key_hex == other.public_key_hex

    # Rewritten in place with the same size, the new mtime still gives it away.
    seed_file.write_text(SEED_HEX)
    os.utime(seed_file, ns=(0, 1_000_000_000))
    clock.now += SEED_FILE_CHECK_INTERVAL_S
    assert signer.sign(ENVELOPE) == SIGNATURE

    seed_file.unlink()
    clock.now += SEED_FILE_CHECK_INTERVAL_S
    with pytest.raises(ConfigurationError, match="cannot read the signing seed file"):
        signer.sign(ENVELOPE)
    seed_file.write_text(SEED_HEX)  # back again: signing recovers at the next check
    assert signer.sign(ENVELOPE) == SIGNATURE


def test_public_key_follows_the_seed_file_before_any_signature(tmp_path: Path) -> None:
    seed_file = tmp_path / "seed"
    seed_file.write_text(SEED_HEX)
    clock = FakeClock()
    signer = TaskSigner(seed_file=seed_file, clock=clock)
    _rotate(seed_file, OTHER_SEED_HEX)
    clock.now += SEED_FILE_CHECK_INTERVAL_S
    # The key reported is the key the next signature uses, even though nothing was signed since the rotation.
    public = signer.public_key_hex
    assert public == TaskSigner.from_seed(OTHER_SEED_HEX).public_key_hex
    TaskVerifier(public).verify(ENVELOPE, signer.sign(ENVELOPE))


def test_seed_file_is_not_read_for_every_signature(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed_file = tmp_path / "seed"
    seed_file.write_text(SEED_HEX)
    reads: list[object] = []
    stats: list[object] = []
    real_read, real_stat = signing._read_key_file, os.stat

    def counting_read(path: str | os.PathLike[str], *, what: str) -> bytearray:
        reads.append(path)
        return real_read(path, what=what)

    def counting_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        stats.append(path)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(signing, "_read_key_file", counting_read)
    monkeypatch.setattr(signing.os, "stat", counting_stat)
    clock = FakeClock()
    signer = TaskSigner(seed_file=seed_file, clock=clock)
    signatures = {signer.sign(ENVELOPE) for _ in range(2000)}
    assert signatures == {SIGNATURE}
    assert len(reads) == 1 and len(stats) == 1  # both at construction
    # After a second: one stat finds the file unchanged, so it is not read again.
    clock.now += SEED_FILE_CHECK_INTERVAL_S
    for _ in range(2000):
        signer.sign(ENVELOPE)
    assert len(reads) == 1 and len(stats) == 2


def test_public_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "key.pub"
    key_file.write_text(PUBLIC_HEX + "\n")
    TaskVerifier.from_public_key_file(key_file).verify(ENVELOPE, SIGNATURE)
    TaskVerifier.from_public_key_file(str(key_file), optional=True).verify(ENVELOPE, None)


@pytest.mark.parametrize(
    "content",
    ["", "00" * 31, "00" * 33, "zz" * 32, "00 " * 32, bytes.fromhex(SEED_HEX).decode("latin-1")],
)
def test_bad_key_files(tmp_path: Path, content: str) -> None:
    path = tmp_path / "key"
    path.write_text(content, encoding="latin-1")
    with pytest.raises(ConfigurationError, match=r"invalid signing seed in .*: expected 64 hex characters$"):
        TaskSigner.from_seed_file(path)
    with pytest.raises(ConfigurationError, match=r"invalid verification key in .*: expected 64 hex characters$"):
        TaskVerifier.from_public_key_file(path)


def test_missing_key_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read the signing seed file"):
        TaskSigner.from_seed_file(tmp_path / "missing")
    with pytest.raises(ConfigurationError, match="cannot read the verification key file"):
        TaskVerifier.from_public_key_file(tmp_path / "missing")


@pytest.mark.parametrize(
    "key",
    [b"", b"\x00" * 31, b"\x00" * 33, "", "00" * 31, "00" * 33, "zz" * 32, SEED_HEX[:-1] + "é", b"\xff" * 64],
)
def test_bad_key_lengths(key: str | bytes) -> None:
    with pytest.raises(ConfigurationError, match="invalid seed: expected 32 raw bytes or 64 hex characters"):
        TaskSigner.from_seed(key)
    with pytest.raises(ConfigurationError, match="invalid public key: expected 32 raw bytes or 64 hex characters"):
        TaskVerifier.from_public_key(key)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"seed": SEED_HEX, "seed_file": "seed"}],
)
def test_signer_needs_exactly_one_source(kwargs: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError, match="exactly one of seed and seed_file"):
        TaskSigner(**kwargs)


def test_missing_cryptography_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry makes the import fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.asymmetric", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'asyncjobs\[signing\]'"):
        TaskSigner.from_seed(SEED_HEX)
    with pytest.raises(ConfigurationError, match=r"pip install 'asyncjobs\[signing\]'"):
        TaskVerifier.from_public_key(PUBLIC_HEX)


def test_a_signers_verifier_accepts_every_key_it_used(tmp_path: Path) -> None:
    # A client signing from a seed file verifies its own tasks: those signed before a rotation stay valid.
    seed_file = tmp_path / "seed"
    seed_file.write_text(SEED_HEX)
    clock = FakeClock()
    signer = TaskSigner(seed_file=seed_file, clock=clock)
    verifier = TaskVerifier.for_signer(signer)
    before = signer.sign(ENVELOPE)
    _rotate(seed_file, OTHER_SEED_HEX)
    clock.now += SEED_FILE_CHECK_INTERVAL_S
    after = signer.sign(ENVELOPE)
    assert after != before
    verifier.verify(ENVELOPE, before)
    verifier.verify(ENVELOPE, after)
    stranger = TaskSigner.from_seed("ab" * 32).sign(ENVELOPE)
    with pytest.raises(InvalidSignature):
        verifier.verify(ENVELOPE, stranger)
