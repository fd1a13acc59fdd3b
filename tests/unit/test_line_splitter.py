"""The parser's lines, cut from a stream read in chunks into one reused buffer: the same lines as
splitting the whole stream, and no line held beyond its cap however long it runs."""
import random

import pytest

from overnight_agent.capture import LineSplitter


def reference(data: bytes, cap: int):
    *lines, rest = data.split(b"\n")
    return [line[:cap] for line in lines], (rest[:cap] or None)


def split(data: bytes, cap: int, rng: random.Random):
    splitter, buf, out, at = LineSplitter(cap), bytearray(64), [], 0
    while at < len(data):
        n = min(rng.randint(1, 64), len(data) - at)
        buf[:n] = data[at:at + n]
        out += splitter.feed(buf, n)
        assert len(splitter.partial) <= cap
        at += n
    return out, splitter.flush(), splitter.cut


@pytest.mark.parametrize("seed", range(200))
def test_lines_are_those_of_the_whole_stream_cut_at_the_cap(seed):
    rng = random.Random(seed)
    pieces = [rng.choice([b"\n", b"x" * rng.randint(0, 90), b"ab\n\ncd", "é".encode()]) for _ in range(rng.randint(0, 30))]
    data, cap = b"".join(pieces), rng.choice([1, 5, 16, 100])
    lines, rest, cut = split(data, cap, rng)
    assert (lines, rest) == reference(data, cap)
    assert cut == sum(len(line) > cap for line in data.split(b"\n"))


def test_a_hundred_megabyte_line_is_held_to_the_cap():
    splitter, buf = LineSplitter(1 << 20), bytearray(b"y" * (1 << 20))
    for _ in range(100):
        assert splitter.feed(buf, len(buf)) == []
        assert len(splitter.partial) == 1 << 20
    buf[:3] = b"z\n{"
    lines = splitter.feed(buf, 3)
    assert [len(line) for line in lines] == [1 << 20] and splitter.cut == 1
    assert splitter.flush() == b"{"
