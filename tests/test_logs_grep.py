"""`ipcd.logs.grep`: RE2 with smart case, and its bounds, each refused with the reason."""

from __future__ import annotations

import threading

import pytest

from ipcd.logs.grep import MAX_PATTERN_CHARS, MAX_PROGRAM_SIZE, GrepError, compile_grep


@pytest.mark.parametrize(
    ("pattern", "text", "hit"),
    [
        (r"disk (full|error)", "Disk Full on sda", True),  # no capital: case ignored
        (r"Disk", "disk full", False),  # a capital: case matters
        (r"\d{3}\.\d+", "took 123.5 ms", True),
        (r"(?i)DISK", "disk", True),
        (r"^ab$", "ab", True),
        (r"\bssh\w*", "sshd: Accepted", True),
        (r"жёлтый", "ЖЁЛТЫЙ свет", True),  # case folding beyond ASCII
        ("(a+)+$", "a" * 40 + "!", False),  # a backtracking engine takes hours here
        ("(x+x+)+y", "x" * 5000, False),
        ("[a{99999}]", "{", True),  # in a class, { is a literal
        (r"\{99999}", "{99999}", True),
    ],
)
def test_grep_is_re2_with_smart_case(pattern: str, text: str, hit: bool) -> None:
    assert compile_grep(pattern).search_text(text) is hit


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("(unclosed", "bad regular expression: missing ): (unclosed (RE2 syntax)"),
        ("(?=ahead)", "bad regular expression: invalid perl operator: (?= (RE2 syntax)"),
        (r"(a)\1", r"bad regular expression: invalid escape sequence: \1 (RE2 syntax)"),
        ("a{1001}", "bad regular expression: invalid repetition size: {1001}, at most 1000 (RE2 syntax)"),
        ("a{4294967296}", "bad regular expression: invalid repetition size: {4294967296} (at most 1000)"),
        (
            "x{2,99999999999999999999}",
            "bad regular expression: invalid repetition size: {2,99999999999999999999} (at most 1000)",
        ),
        (
            "a" * (MAX_PATTERN_CHARS + 1),
            f"pattern too long: {MAX_PATTERN_CHARS + 1} characters, at most {MAX_PATTERN_CHARS}",
        ),
        ("(" * 5000 + "a" + ")" * 5000, f"pattern too long: 10001 characters, at most {MAX_PATTERN_CHARS}"),
        ("a{997}", "pattern too complex: it compiles to 1001 RE2 instructions, at most 1000"),
        ("|".join(f"w{i}x" for i in range(100_000)), "pattern too long: 788889 characters"),
        (r"\pL" * 1365, "pattern too large: RE2 cannot compile it in 2048 KiB"),
    ],
)
def test_grep_refuses_with_the_reason(pattern: str, message: str, capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(GrepError) as e:
        compile_grep(pattern)
    assert str(e.value).startswith(message)
    assert capfd.readouterr() == ("", "")  # RE2 writes nothing to ipcd's stderr


def test_grep_bounds_at_their_edges() -> None:
    assert compile_grep("a{996}")._re.ProgramSize() == MAX_PROGRAM_SIZE
    nested = "(" * 2047 + "a" + ")" * 2047
    assert len(nested) == MAX_PATTERN_CHARS - 1 and compile_grep(nested).search_text("a")
    longest = "(" * 2047 + "ab" + ")" * 2047
    assert len(longest) == MAX_PATTERN_CHARS and compile_grep(longest).search_text("xaby")


def test_grep_releases_the_gil_while_it_matches() -> None:
    # About the costliest match the bounds allow: RE2's DFA gives up on a{990}! over
    # "aaa...", and its NFA takes text length x program size.  This thread counts
    # meanwhile: had the match held the GIL, it could not count until the match ended.
    g = compile_grep("a{990}!")
    matching = threading.Thread(target=g.search, args=(b"a" * 65536,))
    counted = 0
    matching.start()
    while matching.is_alive():
        counted += 1
    matching.join()
    assert counted > 1000
