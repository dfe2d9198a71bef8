"""``FAILED_STATES``, and task-signing key pairs: generated, written to files, read back and used."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

import asyncjobs
from asyncjobs import TaskState, names, signing, task
from asyncjobs.errors import ConfigurationError, InvalidSignature
from asyncjobs.signing import KeyFiles, KeyPair, TaskSigner, TaskVerifier, generate_key_pair, write_key_pair

# ---- FAILED_STATES ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "failed"),
    [
        (TaskState.UNKNOWN, True),
        (TaskState.NEW, False),
        (TaskState.ACTIVE, False),
        (TaskState.RETRY, False),
        (TaskState.EXPIRED, True),
        (TaskState.TERMINATED, True),
        (TaskState.COMPLETED, False),
        (TaskState.QUEUE_ERROR, True),
        (TaskState.BLOCKED, False),
        (TaskState.UNREACHABLE, True),
    ],
)
def test_failed_states(state: TaskState, failed: bool) -> None:
    assert (state in asyncjobs.FAILED_STATES) is failed


def test_failed_states_cover_every_state_and_make_dependents_unreachable() -> None:
    assert isinstance(asyncjobs.FAILED_STATES, frozenset)
    assert asyncjobs.FAILED_STATES is task.FAILED_STATES
    # The worker's dependency check (`in FAILED_STATES or == UNREACHABLE`) still means what it meant.
    old = {TaskState.EXPIRED, TaskState.TERMINATED, TaskState.QUEUE_ERROR, TaskState.UNKNOWN}
    assert old | {TaskState.UNREACHABLE} == asyncjobs.FAILED_STATES
    assert not asyncjobs.FAILED_STATES & {TaskState.COMPLETED, TaskState.RETRY}


@pytest.mark.parametrize("name", ["validate_name", "validate_task_id", "validate_queue_name"])
def test_name_checks_keep_their_import_path(name: str) -> None:
    assert getattr(task, name) is getattr(names, name)


# ---- key pairs -------------------------------------------------------------------------------------------------

ENVELOPE = b"id:QUEUE:type:10:1784710800123456789:0:"


def _is_hex_key(text: str) -> bool:
    return len(text) == 64 and set(text) <= set("0123456789abcdef")


def test_generate_key_pair() -> None:
    pair = generate_key_pair()
    assert isinstance(pair, KeyPair)
    assert _is_hex_key(pair.seed_hex) and _is_hex_key(pair.public_key_hex)
    assert pair.seed_hex not in repr(pair) and pair.public_key_hex in repr(pair)
    assert generate_key_pair() != pair
    with pytest.raises(AttributeError):
        pair.seed_hex = "00" * 32  # type: ignore[misc]


@pytest.mark.parametrize(
    ("signer_from", "verifier_from"),
    [
        ("seed_hex", "public_key_hex"),
        ("seed_bytes", "public_key_bytes"),
        ("seed_hex", "signer"),
    ],
)
def test_a_generated_pair_signs_what_its_public_key_verifies(signer_from: str, verifier_from: str) -> None:
    pair = generate_key_pair()
    signer = TaskSigner.from_seed(pair.seed_hex if signer_from == "seed_hex" else bytes.fromhex(pair.seed_hex))
    assert signer.public_key_hex == pair.public_key_hex
    verifier = {
        "public_key_hex": lambda: TaskVerifier.from_public_key(pair.public_key_hex),
        "public_key_bytes": lambda: TaskVerifier.from_public_key(bytes.fromhex(pair.public_key_hex)),
        "signer": lambda: TaskVerifier.for_signer(signer),
    }[verifier_from]()
    verifier.verify(ENVELOPE, signer.sign(ENVELOPE))
    with pytest.raises(InvalidSignature):
        verifier.verify(ENVELOPE + b"x", signer.sign(ENVELOPE))
    with pytest.raises(InvalidSignature):
        TaskVerifier.from_public_key(generate_key_pair().public_key_hex).verify(ENVELOPE, signer.sign(ENVELOPE))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o000])
def test_write_key_pair_to_a_directory(tmp_path: Path, umask: int) -> None:
    directory = tmp_path / "keys" / "nested"
    old_umask = os.umask(umask)
    try:
        files = write_key_pair(directory)
    finally:
        os.umask(old_umask)
    assert files == KeyFiles(directory / "signing.seed", directory / "signing.pub", files.public_key_hex)
    assert (signing.SEED_FILE_NAME, signing.PUBLIC_KEY_FILE_NAME) == ("signing.seed", "signing.pub")
    assert _mode(files.seed_file) == 0o600
    assert _mode(files.public_key_file) == 0o644
    # 64 hex digits and no newline: Go decodes the whole file as hex.
    seed_text, public_text = files.seed_file.read_text(), files.public_key_file.read_text()
    assert _is_hex_key(seed_text) and public_text == files.public_key_hex
    signer = TaskSigner.from_seed_file(files.seed_file)
    assert signer.public_key_hex == files.public_key_hex
    TaskVerifier.from_public_key_file(files.public_key_file).verify(ENVELOPE, signer.sign(ENVELOPE))
    assert sorted(p.name for p in directory.iterdir()) == ["signing.pub", "signing.seed"]  # no temporary files


def test_write_a_given_pair_to_chosen_paths(tmp_path: Path) -> None:
    pair = generate_key_pair()
    files = write_key_pair(seed_file=tmp_path / "producer.seed", public_key_file=str(tmp_path / "worker.pub"))
    assert files.seed_file == tmp_path / "producer.seed" and _mode(files.seed_file) == 0o600
    files = write_key_pair(
        seed_file=tmp_path / "a.seed", public_key_file=tmp_path / "a.pub", key_pair=pair, overwrite=True
    )
    assert files.public_key_hex == pair.public_key_hex
    assert (tmp_path / "a.seed").read_text() == pair.seed_hex
    assert (tmp_path / "a.pub").read_text() == pair.public_key_hex


@pytest.mark.parametrize("existing", ["signing.seed", "signing.pub"])
def test_existing_files_are_refused_unless_overwrite(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).write_text("keep me")
    with pytest.raises(ConfigurationError, match=r"already exists: pass overwrite=True"):
        write_key_pair(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [existing]  # nothing written
    assert (tmp_path / existing).read_text() == "keep me"
    files = write_key_pair(tmp_path, overwrite=True)
    assert TaskSigner.from_seed_file(files.seed_file).public_key_hex == files.public_key_hex
    assert _mode(files.seed_file) == 0o600 and _mode(files.public_key_file) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signing.pub", "signing.seed"]


def test_overwrite_rotates_a_running_signers_seed(tmp_path: Path) -> None:
    now = [0.0]
    first = write_key_pair(tmp_path)
    signer = TaskSigner(seed_file=first.seed_file, clock=lambda: now[0])
    assert signer.public_key_hex == first.public_key_hex
    second = write_key_pair(tmp_path, overwrite=True)
    assert second.public_key_hex != first.public_key_hex
    now[0] += signing.SEED_FILE_CHECK_INTERVAL_S
    assert signer.public_key_hex == second.public_key_hex
    TaskVerifier.from_public_key_file(second.public_key_file).verify(ENVELOPE, signer.sign(ENVELOPE))


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, "needs a directory, or both seed_file and public_key_file"),
        (("dir",), {"seed_file": "s"}, "not a mix of the two"),
        ((), {"seed_file": "s"}, "both seed_file and public_key_file"),
        ((), {"public_key_file": "p"}, "both seed_file and public_key_file"),
        ((), {"seed_file": "same", "public_key_file": "same"}, "are the same file"),
        (("dir",), {"key_pair": KeyPair("zz" * 32, "00" * 32)}, "invalid seed of key_pair: expected 64 hex"),
        (("dir",), {"key_pair": KeyPair("00" * 32, "00" * 31)}, "invalid public key of key_pair: expected 64 hex"),
    ],
)
def test_write_key_pair_refuses_bad_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match=message):
        write_key_pair(*args, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_path_is_explained(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigurationError, match=r"cannot write the key file .*signing\.seed: .*writable"):
        write_key_pair(seed_file=tmp_path / "a-file" / "signing.seed", public_key_file=tmp_path / "signing.pub")
    with pytest.raises(ConfigurationError, match=r"cannot write the key file .*signing\.pub"):
        write_key_pair(seed_file=tmp_path / "signing.seed", public_key_file=tmp_path / "a-file" / "signing.pub")
    with pytest.raises(ConfigurationError, match=r"cannot create the key directory"):
        write_key_pair(tmp_path / "a-file" / "keys")
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]  # no seed left without its public key


@pytest.mark.parametrize("call", [generate_key_pair, lambda: write_key_pair("unused")])
def test_key_pairs_need_cryptography(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, call: Any) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.asymmetric", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'asyncjobs\[signing\]'"):
        call()
    assert list(tmp_path.iterdir()) == []
