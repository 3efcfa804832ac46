"""keys.store: how a key is shown, and .env rewritten with one key set (pure: text in,
text out; the file, its lock and the crash test are in tests/integration/test_keys.py)."""

from __future__ import annotations

import pytest

from unistack import envfile
from unistack.keys import store


def values(text: str) -> dict[str, str]:
    return {a.key: a.value for a in envfile.parse(text, ".env")}


def test_a_key_is_shown_by_its_last_four_characters_or_only_its_length() -> None:
    assert store.masked("Pq7Zr2Lm9Xc4Vb8Nn3Ty6Uh1Jk5Gf0Ds") == "****f0Ds"
    assert store.masked("short") == "(set, 5 characters)"
    assert store.masked("") == "(not set)"


def test_a_key_is_replaced_where_it_stands_and_the_rest_is_kept_to_the_byte() -> None:
    text = ("# the operator's note\nREDIS_PASSWORD=abc\nexport POLYGON_API_KEY=old # why\n"
            "\nUNISTACK_OPERATOR_TOKEN='t o k'\n")
    assert store.replaced(text, {"POLYGON_API_KEY": "new_Key_1234"}, ".env") == (
        "# the operator's note\nREDIS_PASSWORD=abc\nPOLYGON_API_KEY=new_Key_1234\n"
        "\nUNISTACK_OPERATOR_TOKEN='t o k'\n")


def test_a_missing_key_is_appended_on_a_line_of_its_own() -> None:
    text = "REDIS_PASSWORD=abc"  # no final newline
    assert store.replaced(text, {"ALPACA_API_KEY_ID": "PKX"}, ".env") == \
        "REDIS_PASSWORD=abc\nALPACA_API_KEY_ID=PKX\n"
    assert store.replaced("", {"ALPACA_API_KEY_ID": "PKX"}, ".env") == "ALPACA_API_KEY_ID=PKX\n"


def test_a_key_written_twice_is_replaced_twice_so_no_old_value_wins() -> None:
    text = "POLYGON_API_KEY=one\nPOLYGON_API_KEY=two\n"
    assert values(store.replaced(text, {"POLYGON_API_KEY": "three"}, ".env")) == {
        "POLYGON_API_KEY": "three"}


@pytest.mark.parametrize("value", ['with "quotes" and \\ backslash', "a b", "x#y", "$HOME"])
def test_a_value_with_special_characters_reads_back_as_written(value: str) -> None:
    assert values(store.replaced("", {"POLYGON_API_KEY": value}, ".env")) == {
        "POLYGON_API_KEY": value}


@pytest.mark.parametrize("value", ["two\nlines", "", " padded ", "nul\0"])
def test_a_value_that_cannot_be_one_line_is_refused_without_showing_it(value: str) -> None:
    with pytest.raises(store.BadValue) as refused:
        store.replaced("", {"POLYGON_API_KEY": value}, ".env")
    assert str(refused.value).startswith("POLYGON_API_KEY (value hidden, ")
    if value.strip():
        assert value.strip() not in str(refused.value)


def test_a_broken_env_is_refused_naming_its_line_not_rewritten() -> None:
    with pytest.raises(envfile.EnvFileError, match=r"\.env:2: "):
        store.replaced("REDIS_PASSWORD=abc\nthis is not an assignment\n",
                       {"POLYGON_API_KEY": "x"}, ".env")
