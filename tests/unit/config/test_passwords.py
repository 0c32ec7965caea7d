"""Artemis's one-way password form: known vectors, round trips and malformed values."""

from __future__ import annotations

import hashlib
import re

import pytest

from pybroker.config.passwords import (
    hash_password,
    is_hashed,
    parse_hashed,
    verify_password,
)
from pybroker.errors import ConfigError

# Published in Artemis's HashProcessorTest (artemis-commons): values Artemis itself produced.
ARTEMIS_PASSWORD = "password"
ARTEMIS_PASSWORD_HASH = (
    "ENC(1024:973A466A489ABFDED3D4B3D181DC77F410F2FC6E87432809A46B72B294147D76:"
    "C999ECA8A85387E1FFB14E4FE5CECD17948BA80BA04318A9BE4C3E34B7FE2925F43AB6BC9DFE0D9855DA67439AEE"
    "B9850351BC4D5D3AEC6A6903C42B8EB4ED1E)"
)
ARTEMIS_MANAGER = "manager"
ARTEMIS_MANAGER_HASH = (
    "ENC(1024:48018CDB1B5925DA2CC51DBD6F7E8C5FF156C22C03C6C69720C56F8BE76A1D48:"
    "0A0F68C2C01F46D347C6C51D641291A4608EDA50A873ED122909D9134B7A757C14176F0C033F0BD3CE35B3C373D5"
    "B652650CDE5FFBBB0F286D4495CEFEEDB166)"
)

# RFC 6070 PBKDF2-HMAC-SHA1 vectors (password "password", salt "salt", 20-byte keys): the
# derived-key length comes from the stored hash, as in Artemis's verify.
SALT_HEX = b"salt".hex()
RFC6070 = [
    (1, "0c60c80f961f0e71f3a9b524af6012062fe037a6"),
    (2, "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957"),
    (4096, "4b007901b765489abead49d926f721d065a429c1"),
]

ENC_FORM = re.compile(r"^ENC\((\d+):([0-9A-F]{64}):([0-9A-F]{128})\)$")


@pytest.mark.parametrize(
    ("plain", "stored"),
    [(ARTEMIS_PASSWORD, ARTEMIS_PASSWORD_HASH), (ARTEMIS_MANAGER, ARTEMIS_MANAGER_HASH)],
)
def test_artemis_hashes_verify(plain: str, stored: str) -> None:
    assert verify_password(stored, plain)
    assert not verify_password(stored, plain + "x")
    assert not verify_password(stored, plain.upper())


def test_artemis_hashes_do_not_cross_verify() -> None:
    assert not verify_password(ARTEMIS_PASSWORD_HASH, ARTEMIS_MANAGER)
    assert not verify_password(ARTEMIS_MANAGER_HASH, ARTEMIS_PASSWORD)


def test_hash_with_artemis_salt_reproduces_artemis_output() -> None:
    salt = bytes.fromhex("973A466A489ABFDED3D4B3D181DC77F410F2FC6E87432809A46B72B294147D76")
    assert hash_password(ARTEMIS_PASSWORD, salt=salt) == ARTEMIS_PASSWORD_HASH


@pytest.mark.parametrize(("iterations", "digest_hex"), RFC6070)
def test_rfc6070_vectors_through_verify(iterations: int, digest_hex: str) -> None:
    stored = f"ENC({iterations}:{SALT_HEX}:{digest_hex})"
    assert verify_password(stored, "password")
    assert not verify_password(stored, "passwore")


def test_fresh_hash_has_artemis_shape_and_round_trips() -> None:
    stored = hash_password("s3cret")
    match = ENC_FORM.match(stored)
    assert match is not None, stored
    assert match.group(1) == "1024"
    assert verify_password(stored, "s3cret")
    assert not verify_password(stored, "s3cre")
    assert not verify_password(stored, "")


def test_salts_are_random() -> None:
    first, second = hash_password("same"), hash_password("same")
    assert first != second
    assert parse_hashed(first).salt != parse_hashed(second).salt
    assert verify_password(first, "same") and verify_password(second, "same")


def test_custom_iterations_are_written_and_used() -> None:
    stored = hash_password("pw", iterations=7)
    assert stored.startswith("ENC(7:")
    assert verify_password(stored, "pw")
    # Changing the iteration count in the stored text breaks verification.
    assert not verify_password(stored.replace("ENC(7:", "ENC(8:"), "pw")


def test_non_ascii_password_is_hashed_as_utf8() -> None:
    salt = bytes(range(32))
    stored = hash_password("pässwörd€", salt=salt)
    expected = hashlib.pbkdf2_hmac("sha1", "pässwörd€".encode(), salt, 1024, 64).hex().upper()
    assert stored.endswith(f":{expected})")
    assert verify_password(stored, "pässwörd€")
    assert not verify_password(stored, "passwörd€")


def test_plain_text_passwords() -> None:
    assert verify_password("admin", "admin")
    assert not verify_password("admin", "Admin")
    assert not verify_password("admin", "admin ")
    assert not verify_password("admin", "")
    assert verify_password("", "")
    assert verify_password("pässwörd", "pässwörd")
    assert not is_hashed("admin")


def test_plain_text_that_looks_half_hashed_is_plain() -> None:
    # Artemis's test is prefix *and* suffix; anything else is a plain password.
    assert not is_hashed("ENC(1024:aa:bb")
    assert verify_password("ENC(1024:aa:bb", "ENC(1024:aa:bb")


@pytest.mark.parametrize(
    "stored",
    [
        "ENC()",
        "ENC(1024)",
        "ENC(1024:AA)",
        "ENC(1024:AA:BB:CC)",
        "ENC(x:AA:BB)",
        "ENC(0:AA:BB)",
        "ENC(-1:AA:BB)",
        "ENC(1024:ZZ:BB)",
        "ENC(1024:AAA:BB)",
        "ENC(1024::BB)",
        "ENC(1024:AA:)",
    ],
)
def test_malformed_hashes_never_match_and_parse_says_why(stored: str) -> None:
    assert is_hashed(stored)
    assert not verify_password(stored, "")
    assert not verify_password(stored, stored)
    with pytest.raises(ConfigError):
        parse_hashed(stored)


def test_parse_hashed_parts() -> None:
    parsed = parse_hashed(ARTEMIS_PASSWORD_HASH)
    assert parsed.iterations == 1024
    assert len(parsed.salt) == 32
    assert len(parsed.digest) == 64
    assert parsed.encode() == ARTEMIS_PASSWORD_HASH
    with pytest.raises(ConfigError, match="ENC"):
        parse_hashed("admin")


def test_lower_case_hex_is_accepted() -> None:
    assert verify_password(ARTEMIS_PASSWORD_HASH.lower().replace("enc(", "ENC("), ARTEMIS_PASSWORD)


@pytest.mark.parametrize("iterations", [0, -5])
def test_bad_iterations_rejected(iterations: int) -> None:
    with pytest.raises(ValueError, match="iterations"):
        hash_password("pw", iterations=iterations)


def test_empty_salt_rejected() -> None:
    with pytest.raises(ValueError, match="salt"):
        hash_password("pw", salt=b"")
