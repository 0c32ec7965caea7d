"""Passwords in ``artemis-users.properties``: Artemis's one-way ``ENC(...)`` form and plain text.

Artemis stores a hashed password as ``ENC(<iterations>:<salt hex>:<hash hex>)``, the one-way
mode of its ``DefaultSensitiveStringCodec``: PBKDF2 with HMAC-SHA1, a random 32-byte salt, a
512-bit (64-byte) derived key, 1024 iterations, hex in upper case. The password's characters
enter PBKDF2 as UTF-8 (what the JDK's ``PBKDF2WithHmacSHA1`` does with a ``char[]``). Producing
exactly that form means an Artemis users file works with pybroker and a pybroker one with Artemis.

When verifying, the derived-key length is taken from the stored hash (as Artemis does), so a
stored value with a shorter or longer hash still verifies. A line without ``ENC(...)`` is a plain
text password, accepted as Artemis accepts it. Every comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from pybroker.errors import ConfigError

ENC_PREFIX = "ENC("
ENC_SUFFIX = ")"
DEFAULT_ITERATIONS = 1024
SALT_LENGTH = 32
KEY_LENGTH = 64
_SEPARATOR = ":"


@dataclass(frozen=True)
class HashedPassword:
    """The three parts of a stored ``ENC(iterations:salt:hash)`` value."""

    iterations: int
    salt: bytes
    digest: bytes

    def encode(self) -> str:
        """Return the ``ENC(...)`` text, hex in upper case as Artemis writes it."""
        body = _SEPARATOR.join(
            (str(self.iterations), self.salt.hex().upper(), self.digest.hex().upper())
        )
        return f"{ENC_PREFIX}{body}{ENC_SUFFIX}"


def _derive(plain: str, salt: bytes, iterations: int, length: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha1", plain.encode("utf-8"), salt, iterations, length)


def hash_password(
    plain: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
) -> str:
    """Hash ``plain`` into Artemis's one-way form ``ENC(<iterations>:<salt hex>:<hash hex>)``.

    ``iterations`` defaults to 1024 (Artemis's value). ``salt`` defaults to 32 fresh random bytes;
    pass one only to reproduce a known value (tests). Raises ValueError for ``iterations < 1`` or
    an empty salt.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, not {iterations}")
    if salt is None:
        salt = secrets.token_bytes(SALT_LENGTH)
    elif not salt:
        raise ValueError("salt must not be empty")
    return HashedPassword(
        iterations, bytes(salt), _derive(plain, salt, iterations, KEY_LENGTH)
    ).encode()


def is_hashed(stored: str) -> bool:
    """True if ``stored`` is wrapped in ``ENC(...)`` (Artemis's test: prefix and suffix only)."""
    return stored.startswith(ENC_PREFIX) and stored.endswith(ENC_SUFFIX)


def parse_hashed(stored: str) -> HashedPassword:
    """Split a stored ``ENC(iterations:salt:hash)`` value into its parts.

    Raises ConfigError naming what is wrong (not wrapped in ENC(), not three parts, a bad
    iteration count, bad hex). Loaders of users files can call it to reject a damaged entry at
    load time instead of failing every login.
    """
    if not is_hashed(stored):
        raise ConfigError(
            "a hashed password must be written ENC(<iterations>:<salt hex>:<hash hex>)"
        )
    parts = stored[len(ENC_PREFIX) : -len(ENC_SUFFIX)].split(_SEPARATOR)
    if len(parts) != 3:
        raise ConfigError(
            f"hashed password has {len(parts)} ':'-separated parts, expected 3 "
            "(<iterations>:<salt hex>:<hash hex>)"
        )
    iterations_text, salt_hex, digest_hex = parts
    if not iterations_text.isdigit() or int(iterations_text) < 1:
        raise ConfigError(f"hashed password has a bad iteration count {iterations_text!r}")
    try:
        salt = bytes.fromhex(salt_hex)
        digest = bytes.fromhex(digest_hex)
    except ValueError as error:
        raise ConfigError(f"hashed password has bad hex: {error}") from None
    if not salt or not digest:
        raise ConfigError("hashed password has an empty salt or hash")
    return HashedPassword(int(iterations_text), salt, digest)


def verify_password(stored: str, given: str) -> bool:
    """True if ``given`` matches ``stored`` (an ``ENC(...)`` hash or plain text).

    A malformed ``ENC(...)`` value never matches. The comparison is constant-time in both forms.
    """
    if is_hashed(stored):
        try:
            hashed = parse_hashed(stored)
        except ConfigError:
            return False
        candidate = _derive(given, hashed.salt, hashed.iterations, len(hashed.digest))
        return hmac.compare_digest(candidate, hashed.digest)
    return hmac.compare_digest(stored.encode("utf-8"), given.encode("utf-8"))


__all__ = [
    "DEFAULT_ITERATIONS",
    "KEY_LENGTH",
    "SALT_LENGTH",
    "HashedPassword",
    "hash_password",
    "is_hashed",
    "parse_hashed",
    "verify_password",
]
