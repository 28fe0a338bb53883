"""Public identifiers: a prefix naming the kind, then a sortable, random suffix."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """`<prefix>_` + 10 chars of millisecond time + 10 random chars: unique, roughly time-ordered."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(7), "big")
    return f"{prefix}_{_encode(millis, 10)}{_encode(rand, 10)}"
