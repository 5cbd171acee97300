"""Unified social credit code (统一社会信用代码), GB 32100-2015.

18 characters from a 31-symbol alphabet (digits and upper-case letters without
I, O, Z, S, V). Character 18 is a check character over the first 17 with weights
3^(i) mod 31.
"""

from __future__ import annotations

ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_VALUE = {ch: i for i, ch in enumerate(ALPHABET)}


class InvalidCreditCode(ValueError):
    pass


def check_character(first17: str) -> str:
    total = sum(_VALUE[ch] * w for ch, w in zip(first17, WEIGHTS, strict=True))
    return ALPHABET[(31 - total % 31) % 31]


def validate_uscc(code: str) -> str:
    """Return the code if valid, else raise InvalidCreditCode saying what is wrong."""
    if len(code) != 18:
        raise InvalidCreditCode(f"must be 18 characters, got {len(code)}")
    bad = sorted({ch for ch in code if ch not in _VALUE})
    if bad:
        raise InvalidCreditCode(f"characters not allowed: {''.join(bad)}")
    if not code[2:8].isdigit():
        raise InvalidCreditCode("characters 3-8 must be the administrative region code")
    expected = check_character(code[:17])
    if code[17] != expected:
        raise InvalidCreditCode(f"check character is {code[17]}, expected {expected}")
    return code


def make_uscc(registration: str, region_code: str, organisation: str) -> str:
    """Compose a valid code from its parts (used by the sample generator)."""
    first17 = registration + region_code + organisation
    if len(first17) != 17:
        raise InvalidCreditCode("parts must total 17 characters")
    return first17 + check_character(first17)
