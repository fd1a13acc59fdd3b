"""The one-pass literal search behind redaction: hyperscan answers exactly what the pure Python
reference answers, on any bytes; redaction gives the same bytes whichever engine finds the
anchors; and in CI the fast engine is the one in use."""
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overnight_agent import literals, redact
from overnight_agent.redact import Redactor, StreamRedactor

from secretkit import ENV, FORMS

ANCHORS = [a.encode() for a in redact._ALL_ANCHORS]
# Pieces that make near-misses likely: anchors in every case, cut short, glued together, and the
# non-ASCII letters that fold to ASCII ones (which a caseless ASCII match must not fold).
FRAGMENTS = ANCHORS + [a.upper() for a in ANCHORS] + [a[:-1] for a in ANCHORS] + [
    b"Token", b"kEy", b"PaSs", b"\xe2\x84\xaaey", b"\xc4\xb0", b"\xc5\xbf", b"\xff\xfe", b"\n", b" ",
    b"=", b"sk-proj-", b"hunter2hunter2", b"hunter2hunter", b"\x00", "é日本".encode()]
pieces = st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=12))
texts = st.lists(pieces, max_size=40).map(b"".join)


def needs_fast_engine():
    why = literals.why_not_fast()
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the fast engine: {why}")
        pytest.skip(why)


@pytest.fixture
def pure_python(monkeypatch):
    """Redaction as on a machine without hyperscan."""
    monkeypatch.setattr(literals, "hyperscan", None)


def test_ci_runs_the_fast_engine():
    needs_fast_engine()
    assert Redactor(ENV).engine == "hyperscan"


@settings(max_examples=400, deadline=None)
@given(data=texts, exact=st.lists(st.binary(min_size=1, max_size=10).filter(lambda b: b"\0" not in b), max_size=4))
def test_hyperscan_finds_exactly_what_the_reference_finds(data, exact):
    needs_fast_engine()
    finder = literals.Literals(ANCHORS, exact + [b"hunter2hunter2"], engine="hyperscan")
    assert finder.present(data) == finder.present_plain(data)
    view = memoryview(bytearray(b"@" + data))[1:]   # what the loop hands over: a view of its buffer
    assert finder.present(view) == finder.present_plain(data)


@settings(max_examples=150, deadline=None)
@given(lines=st.lists(st.one_of(texts, st.sampled_from([f.encode() for f, _, _ in FORMS])), max_size=12),
       seed=st.integers(0, 2**32))
def test_redaction_gives_the_same_bytes_with_either_engine(lines, seed):
    needs_fast_engine()
    data = b"\n".join(lines)
    fast = Redactor(ENV)
    plain = Redactor(ENV, engine="python")
    expected = plain.bytes(data)
    assert fast.bytes(data) == expected
    # and in a stream cut anywhere, read into a reused buffer as the loop does
    rng = random.Random(seed)
    stream, out, at = StreamRedactor(Redactor(ENV)), [], 0
    buffer = bytearray(64)
    while at < len(data):
        n = min(rng.randint(1, 64), len(data) - at)
        buffer[:n] = data[at:at + n]
        out += [bytes(piece) for piece in stream.pieces(buffer, n)]   # written before reuse
        at += n
    assert b"".join(out) + stream.flush() == Redactor(ENV).bytes(data)


def test_without_hyperscan_redaction_still_works(pure_python):
    redactor = Redactor(ENV)
    assert redactor.engine == "python"
    for form, secret, _ in FORMS:
        assert secret.encode() not in redactor.bytes(form.encode())
    assert literals.why_not_fast() == "the hyperscan package is not installed"


def test_a_literal_holding_a_nul_byte_is_looked_for_by_the_reference():
    finder = literals.Literals([b"key"], [b"ab\0cd"])   # the binding would stop at the NUL
    assert finder.engine == "python"
    assert finder.present(b"zz ab xx") == (frozenset(), frozenset())
    assert finder.present(b"zz ab\0cd") == (frozenset(), frozenset({b"ab\0cd"}))


def test_an_empty_literal_is_refused():
    with pytest.raises(ValueError):
        literals.Literals([b"key", b""])
