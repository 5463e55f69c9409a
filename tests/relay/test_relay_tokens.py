"""Client token format and the `name:sha256hex` file lines (CONTRIBUTING.md, Relay protocol)."""

import hashlib

import pytest
from llm_relay import tokens


def test_generated_token_shape_and_uniqueness():
    made = {tokens.generate_token() for _ in range(200)}
    assert len(made) == 200
    for token in made:
        assert token.startswith("lrt_") and len(token) == 4 + 43
        assert tokens.is_well_formed(token)


def test_hash_is_sha256_hex_of_utf8():
    token = tokens.generate_token()
    assert tokens.hash_token(token) == hashlib.sha256(token.encode()).hexdigest()


def test_line_round_trip():
    token = tokens.generate_token()
    line = tokens.format_token_line("alice-laptop", token)
    assert line == f"alice-laptop:{tokens.hash_token(token)}"
    assert tokens.parse_token_line(line) == ("alice-laptop", tokens.hash_token(token))


@pytest.mark.parametrize("bad", ["lrt_short", "xrt_" + "a" * 43, "lrt_" + "a" * 42 + "!", ""])
def test_malformed_tokens_rejected(bad):
    assert not tokens.is_well_formed(bad)


def test_file_parsing_skips_comments_and_rejects_bad_lines_without_echoing():
    good = tokens.format_token_line("a", "lrt_x")
    parsed = tokens.parse_token_lines(f"# comment\n\n{good}\n")
    assert parsed == {tokens.hash_token("lrt_x"): "a"}
    secret = tokens.generate_token()
    with pytest.raises(tokens.TokenLineError) as err:
        tokens.parse_token_lines(f"{good}\n{secret}\n")
    assert "line 2" in str(err.value) and secret not in str(err.value)
    with pytest.raises(tokens.TokenLineError, match="duplicate"):
        tokens.parse_token_lines(f"{good}\n{good.replace('a:', 'b:')}\n")
    with pytest.raises(tokens.TokenLineError):
        tokens.format_token_line("bad name", "lrt_x")
