"""envfile: the strict line syntax of config.env and .env."""

from __future__ import annotations

import pytest

from unistack.envfile import Assignment, EnvFileError, nearest, parse


def test_assignments_comments_blanks_and_quotes() -> None:
    text = ("# a comment\n\nREDIS_PORT=6380\nexport HUB_PORT = 9180  # inline\n"
            "A='it''s' \nB=\"say \\\"hi\\\" # not a comment\"  # one\nC=a#b\nD=\n")
    with pytest.raises(EnvFileError):
        parse(text, "f")  # 'it''s': text after the closing quote
    text = text.replace("A='it''s' \n", "A='single # kept'\n")
    assert parse(text, "f") == [
        Assignment("REDIS_PORT", "6380", "f:3"), Assignment("HUB_PORT", "9180", "f:4"),
        Assignment("A", "single # kept", "f:5"), Assignment("B", 'say "hi" # not a comment',
                                                           "f:6"),
        Assignment("C", "a#b", "f:7"), Assignment("D", "", "f:8")]


@pytest.mark.parametrize(("text", "said"), [
    ("REDIS_PORT 6380\n", "f:1: 'REDIS_PORT 6380' is not KEY=VALUE"),
    ("ok=1\n6380\n", "f:2: '6380' is not KEY=VALUE"),
    ('SLACK_WEBHOOK_URL="https://hooks.example/x\n', "f:1: the value opens with \" and never "
     "closes it"),
    ("X='a' b\n", "f:1: text after the closing quote"),
])
def test_a_broken_line_names_file_and_line(text: str, said: str) -> None:
    with pytest.raises(EnvFileError, match="^" + said.replace("(", r"\(")):
        parse(text, "f")


def test_a_broken_line_never_shows_a_value() -> None:
    with pytest.raises(EnvFileError) as caught:
        parse("SLACK BOT=xoxb-secret-value\n", "f")
    assert "xoxb-secret-value" not in str(caught.value)


def test_nearest_key() -> None:
    assert nearest("REDIS_PROT", ["REDIS_PORT", "HUB_PORT"]) == " (did you mean REDIS_PORT?)"
    assert nearest("TOTALLY_ELSE", ["REDIS_PORT"]) == ""
