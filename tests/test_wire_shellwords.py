"""`ipcd.wire.shellwords`: a plain command's words, as `shlex.split` gives them, in linear time."""

from __future__ import annotations

import random
import shlex
import tracemalloc

import pytest

from ipcd.wire import shellwords

PARTS = ["a", "b", "é", " ", "  ", "\t", "\r", "\n", "'", '"', "\\", "\\\\", '\\"', "\\'", "x y", "'q q'", '"d\\"d"']


def outcome(split: object, text: str) -> tuple[str, object]:
    try:
        return "words", split(text)  # type: ignore[operator]
    except ValueError as e:
        return "error", str(e)


def test_the_same_words_and_errors_as_shlex() -> None:
    rng = random.Random(5424)
    for _ in range(20_000):
        text = "".join(rng.choice(PARTS) for _ in range(rng.randint(0, 12)))
        assert outcome(shellwords.split, text) == outcome(shlex.split, text), repr(text)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", []),
        ("  \t ", []),
        ("kv.set k 'hello world'", ["kv.set", "k", "hello world"]),
        ('kv.set k "a \\"b\\" \\\\ \\x"', ["kv.set", "k", 'a "b" \\ \\x']),  # in "...", only \" and \\ escape
        ("a\\ b c\\'d 'e\\'", ["a b", "c'd", "e\\"]),  # outside quotes \ escapes anything; in '...', nothing
        ("a'b'\"c\"d ''", ["abcd", ""]),  # parts run together into one word; '' is an empty word
    ],
)
def test_words(text: str, words: list[str]) -> None:
    assert shellwords.split(text) == words == shlex.split(text)


@pytest.mark.parametrize(
    ("text", "error"),
    [("a 'b", "No closing quotation"), ('a "b\\"', "No closing quotation"), ("a\\", "No escaped character")],
)
def test_errors(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        shellwords.split(text)


def test_a_word_of_a_mebibyte() -> None:
    """Each form of a long word: plain, quoted, escaped (shlex takes about 18 s for the plain one)."""
    n = 1 << 20
    assert shellwords.split("kv.set k " + "x" * n) == ["kv.set", "k", "x" * n]
    assert shellwords.split("kv.set k '" + "x" * n + "'") == ["kv.set", "k", "x" * n]
    assert shellwords.split("kv.set k " + "\\y" * (n // 2)) == ["kv.set", "k", "y" * (n // 2)]
    assert shellwords.split("a " * (n // 2)) == ["a"] * (n // 2)


def test_a_limit_reads_the_first_words_only() -> None:
    assert shellwords.split("a b 'c d' e", 3) == ["a", "b", "c d"]
    assert shellwords.split("a b 'never closed", 2) == ["a", "b"]  # the rest is not read
    assert shellwords.split("a b", 3) == ["a", "b"]


def test_escapes_in_quotes_cost_no_memory_each() -> None:
    """A regular expression that may backtrack keeps a record per escape: 150 MB for a MiB of them."""
    text = 'kv.set k "' + "\\a" * (1 << 19) + '"'
    tracemalloc.start()
    try:
        words = shellwords.split(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert words[2] == "\\a" * (1 << 19)  # in "...", \a stays as typed
    assert peak < 8 << 20, peak
