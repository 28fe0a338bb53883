"""Voucher-code patterns with no I/O: charsets, `#` placeholders, capacity, and fast random generation.

The pattern language follows Voucherify's `code_config`: `length` random characters from `charset`
between `prefix` and `postfix`, or a `pattern` whose `#` characters are replaced by random characters.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

CHARSETS = {
    "alphanumeric": "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "alphabetic": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "alphabetic_lowercase": "abcdefghijklmnopqrstuvwxyz",
    "alphabetic_uppercase": "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "numbers": "0123456789",
    # Upper-case letters and digits without the look-alikes 0/O, 1/I/L: safe to read out or type.
    "readable": "23456789ABCDEFGHJKMNPQRSTUVWXYZ",
}
CHARSET_ALIASES = {
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ": "alphanumeric",
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ": "alphabetic",
    "0123456789": "numbers",
}
PLACEHOLDER = "#"
MAX_CODE_LENGTH = 100
# Codes are typed by people and travel in URLs, Liquid templates and one-column CSV files (Braze
# promotion-code lists): printable ASCII only, and none of the characters a CSV or a shell quotes.
UNSAFE = frozenset(",\"'`\\")


class CodeConfigError(ValueError):
    pass


def check_characters(text: str, what: str, *, placeholder: bool = False) -> None:
    """Refuse characters a code may not contain (`placeholder`: '#' is allowed, as in a pattern)."""
    for char in text:
        if not "!" <= char <= "~":
            raise CodeConfigError(
                f"{what} may only contain printable ASCII characters, no spaces or line breaks "
                f"({char!r} is not allowed)"
            )
        if char in UNSAFE:
            raise CodeConfigError(f"{what} may not contain {char!r}: codes must not need quoting in a CSV")
        if char == PLACEHOLDER and not placeholder:
            raise CodeConfigError(f"{what} may not contain '#', the pattern placeholder")


@dataclass(frozen=True, slots=True)
class CodeConfig:
    length: int = 8
    charset: str = CHARSETS["alphanumeric"]
    prefix: str = ""
    postfix: str = ""
    pattern: str | None = None

    @classmethod
    def build(
        cls,
        *,
        length: int | None = None,
        charset: str | None = None,
        prefix: str | None = None,
        postfix: str | None = None,
        pattern: str | None = None,
    ) -> CodeConfig:
        """Validate and complete a configuration; a charset may be a preset name or literal characters."""
        chars = CHARSETS.get(charset or "alphanumeric", charset or "")
        if len(chars) < 2:
            raise CodeConfigError("the charset needs at least two characters")
        if len(set(chars)) != len(chars):
            raise CodeConfigError("the charset repeats characters")
        check_characters(chars, "the charset")
        check_characters(prefix or "", "the prefix")
        check_characters(postfix or "", "the postfix")
        if pattern is not None:
            check_characters(pattern, "the pattern", placeholder=True)
            slots = pattern.count(PLACEHOLDER)
            if slots == 0:
                raise CodeConfigError("the pattern needs at least one '#' placeholder")
            length = slots
        elif length is None:
            length = 8
        if not 1 <= length <= MAX_CODE_LENGTH:
            raise CodeConfigError(f"the code length must be between 1 and {MAX_CODE_LENGTH}")
        config = cls(
            length=length, charset=chars, prefix=prefix or "", postfix=postfix or "", pattern=pattern
        )
        if len(config.example()) > MAX_CODE_LENGTH:
            raise CodeConfigError(f"codes would be longer than {MAX_CODE_LENGTH} characters")
        return config

    @property
    def template(self) -> str:
        """The full code shape with every random position as '#'."""
        body = self.pattern if self.pattern is not None else PLACEHOLDER * self.length
        return f"{self.prefix}{body}{self.postfix}"

    def capacity(self) -> int:
        """How many distinct codes this configuration can produce."""
        return len(self.charset) ** self.length

    def example(self) -> str:
        return self.template.replace(PLACEHOLDER, self.charset[0])

    def check_capacity(self, count: int, *, already_used: int = 0) -> None:
        """Refuse up front a request the pattern cannot satisfy (leaving headroom for random draws)."""
        capacity = self.capacity()
        if count + already_used > capacity:
            raise CodeConfigError(
                f"the pattern allows {capacity} distinct codes, {count + already_used} were requested"
            )

    def generator(self) -> Iterator[str]:
        """An endless stream of random codes (repeats possible; callers keep only new ones).

        Random bytes are mapped to the charset with bytes.translate, dropping the bytes above the
        largest multiple of the charset size so every character stays equally likely.
        """
        charset = self.charset.encode()
        n = len(charset)
        limit = 256 - 256 % n
        table = bytes(charset[b % n] if b < limit else 0 for b in range(256))
        rejected = bytes(range(limit, 256))
        slots = self.length
        if self.pattern is None:
            prefix, postfix = self.prefix, self.postfix
            while True:
                body = os.urandom(slots * 512).translate(table, rejected).decode()
                for start in range(0, len(body) - slots + 1, slots):
                    yield prefix + body[start : start + slots] + postfix
        else:
            fmt = self.template.replace("%", "%%").replace(PLACEHOLDER, "%s")
            while True:
                body = os.urandom(slots * 512).translate(table, rejected).decode()
                for start in range(0, len(body) - slots + 1, slots):
                    yield fmt % tuple(body[start : start + slots])


def bits_of_entropy(config: CodeConfig) -> float:
    return config.length * math.log2(len(config.charset))
