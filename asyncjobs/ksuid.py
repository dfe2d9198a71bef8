"""K-sortable unique ids in the KSUID format used by the Go implementation for task and event ids.

A KSUID is 20 bytes: a 4-byte big-endian count of seconds since 2014-05-13T16:53:20Z (Unix 1400000000)
followed by 16 random bytes, written as 27 base62 characters (``0-9A-Za-z``) left-padded with ``0``. Because
the timestamp leads and the encoding is fixed-width, ids sort lexicographically by creation second.
"""

from __future__ import annotations

import os
import random
import time
from datetime import UTC, datetime
from typing import Final

from asyncjobs.errors import ConfigurationError

__all__ = ["KSUID_LENGTH", "ksuid_timestamp", "new_ksuid"]

KSUID_LENGTH: Final = 27
"""Characters in an encoded KSUID."""

_EPOCH: Final = 1_400_000_000
_PAYLOAD_BITS: Final = 128
_MAX_TIMESTAMP: Final = (1 << 32) - 1
_MAX_VALUE: Final = (1 << 160) - 1
_ALPHABET: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DIGIT_VALUES: Final = {char: index for index, char in enumerate(_ALPHABET)}
# Two base62 digits per division halves the number of big-integer divmods on the enqueue hot path.
_PAIR_BASE: Final = 62 * 62
_PAIRS: Final = tuple(a + b for a in _ALPHABET for b in _ALPHABET)
# 2**160 < 62**27: three chunks of nine digits hold every KSUID.
_CHUNK: Final = 62**9


def _chunk(chunk: int) -> str:
    # Nine base62 digits of a machine-sized chunk, from small divisions and a table of digit pairs.
    pairs = _PAIRS
    rest, last = divmod(chunk, 62)
    rest, d4 = divmod(rest, _PAIR_BASE)
    rest, d3 = divmod(rest, _PAIR_BASE)
    d1, d2 = divmod(rest, _PAIR_BASE)
    return pairs[d1] + pairs[d2] + pairs[d3] + pairs[d4] + _ALPHABET[last]


def _encode(value: int) -> str:
    # Three divmods of the big integer by 62**9 leave machine-sized chunks: this is on the hot path (every task).
    value, low = divmod(value, _CHUNK)
    high, middle = divmod(value, _CHUNK)
    return _chunk(high) + _chunk(middle) + _chunk(low)


class _Sequence:
    """Ids that need only be unique (``secure=False``), made fast: per second, one random KSUID, then that value plus
    1, 2, 3 ... Each is a valid KSUID of that second, and only its last nine digits are encoded again. A random start
    per second and per process keeps them apart from every other process's."""

    def __init__(self) -> None:
        self.second = -1
        self.head = ""
        self.low = 0
        self.left = 0

    def reset(self) -> None:
        """Start afresh (in a forked child, which must not continue its parent's sequence)."""
        self.second, self.left = -1, 0

    def next(self, stamp: int) -> str:
        if stamp != self.second or not self.left:
            while True:  # a start with room for the sequence below the chunk's carry (all but 1 in 3 million)
                value = (stamp << _PAYLOAD_BITS) | random.getrandbits(_PAYLOAD_BITS)
                if value % _CHUNK < _CHUNK - _SEQUENCE_ROOM:
                    break
            encoded = _encode(value)
            self.second, self.head, self.low, self.left = stamp, encoded[:18], value % _CHUNK, _SEQUENCE_ROOM
            return encoded
        self.low += 1
        self.left -= 1
        return self.head + _chunk(self.low)


# 2**32 ids per second per process before a fresh random start; a start leaves that much room below its carry.
_SEQUENCE_ROOM: Final = 1 << 32
_SEQUENCE = _Sequence()
os.register_at_fork(after_in_child=_SEQUENCE.reset)


def new_ksuid(*, now: float | None = None, secure: bool = True) -> str:
    """Return a new random KSUID.

    Args:
        now: Unix time in seconds to stamp the id with; the current time when omitted.
        secure: draw the random part from the OS (task ids); ``False`` makes ids that need only be unique, such as
            event ids, faster: a random start per second and process (from a generator reseeded in forked children),
            then consecutive values.

    Returns:
        The 27-character id.

    Raises:
        ConfigurationError: ``now`` is before 2014-05-13T16:53:20Z or after the year 2150, which the
            4-byte timestamp cannot hold.
    """
    stamp = (int(time.time()) if now is None else int(now)) - _EPOCH
    if not 0 <= stamp <= _MAX_TIMESTAMP:
        raise ConfigurationError(
            f"cannot make a KSUID for Unix time {now}: it must lie between 1400000000 and 5694967295"
        )
    if not secure:
        return _SEQUENCE.next(stamp)
    return _encode((stamp << _PAYLOAD_BITS) | int.from_bytes(os.urandom(16)))


def ksuid_timestamp(value: str) -> datetime:
    """Return the creation time encoded in a KSUID.

    Args:
        value: a 27-character KSUID.

    Returns:
        The timezone-aware UTC time, in whole seconds.

    Raises:
        ConfigurationError: ``value`` is not a valid KSUID.
    """
    if len(value) != KSUID_LENGTH:
        raise ConfigurationError(f"invalid KSUID {value!r}: it must be {KSUID_LENGTH} base62 characters")
    number = 0
    digits = _DIGIT_VALUES
    for char in value:
        digit = digits.get(char)
        if digit is None:
            raise ConfigurationError(f"invalid KSUID {value!r}: {char!r} is not a base62 character (0-9A-Za-z)")
        number = number * 62 + digit
    if number > _MAX_VALUE:
        raise ConfigurationError(f"invalid KSUID {value!r}: it encodes more than 20 bytes")
    return datetime.fromtimestamp((number >> _PAYLOAD_BITS) + _EPOCH, UTC)
