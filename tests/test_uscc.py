import pytest

from models.uscc import InvalidCreditCode, make_uscc, validate_uscc

# Published examples of valid codes (GB 32100-2015 worked examples and public records).
VALID = ["91350100M000100Y43", "91110000600037341L"]


@pytest.mark.parametrize("code", VALID)
def test_known_valid_codes_pass(code: str) -> None:
    assert validate_uscc(code) == code


def test_composed_code_validates_and_any_single_change_is_caught() -> None:
    code = make_uscc("91", "330502", "MA2B3C4D5")
    assert validate_uscc(code) == code
    for position in range(17):
        original = code[position]
        replacement = "1" if original != "1" else "2"
        tampered = code[:position] + replacement + code[position + 1 :]
        if tampered[2:8].isdigit():
            with pytest.raises(InvalidCreditCode, match="check character"):
                validate_uscc(tampered)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("91330502MA2B3C4D5", "18 characters"),
        ("91330502MA2B3C4DIX", "not allowed: I"),
        ("9133O502MA2B3C4D58", "not allowed: O"),
        ("91ABCDEFMA2B3C4D58", "region code"),
    ],
)
def test_malformed_codes_say_what_is_wrong(code: str, message: str) -> None:
    with pytest.raises(InvalidCreditCode, match=message):
        validate_uscc(code)
