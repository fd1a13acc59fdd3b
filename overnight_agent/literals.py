"""Which of a fixed set of literals a byte string holds, found in one pass over it.

Owns: the multi-literal search behind redaction's fast path. Hyperscan (a SIMD multi-pattern
matcher: several GB/s, against ~150 MB/s for a `bytes.find` per literal) when it is installed
and works on this machine; else `bytes.find` per literal, which is also the reference the fast
engine is tested against. Must not: know what the literals mean (that is `redact`'s), or touch
files, processes or the environment.

Caseless literals match with ASCII letters folded and nothing else (what `bytes.lower` does);
exact literals match byte for byte.
"""
import functools
from typing import FrozenSet, Optional, Sequence, Tuple

try:  # a wheel for Linux and macOS, x86_64 and arm64; without it everything still works
    import hyperscan
except ImportError:          # pragma: no cover - depends on the platform
    hyperscan = None

Found = Tuple[FrozenSet[bytes], FrozenSet[bytes]]    # (caseless literals found, exact ones found)


class Literals:
    """`present(data)`: which of `caseless` and of `exact` occur in `data`."""

    def __init__(self, caseless: Sequence[bytes], exact: Sequence[bytes] = (), engine: str = "auto"):
        self.caseless = tuple(dict.fromkeys(c.lower() for c in caseless))
        self.exact = tuple(dict.fromkeys(exact))
        if any(not literal for literal in self.caseless + self.exact):
            raise ValueError("an empty literal matches everywhere")
        # The binding reads each literal up to its first NUL byte (environment values never hold one).
        fast = (engine in ("auto", "hyperscan") and hyperscan is not None
                and not any(b"\0" in literal for literal in self.caseless + self.exact))
        self._db = _database(self.caseless, self.exact) if fast else None
        if engine == "hyperscan" and self._db is None:
            raise RuntimeError(f"hyperscan is not usable here: {why_not_fast()}")
        self.engine = "hyperscan" if self._db is not None else "python"

    def present(self, data: bytes) -> Found:
        if self._db is not None:
            found = self._scan(data)
            if found is not None:
                return found
        return self.present_plain(data)

    def present_plain(self, data: bytes) -> Found:
        """The reference: a `find` per literal."""
        data = data if isinstance(data, bytes) else bytes(data)
        low = data.lower() if self.caseless else b""
        return (frozenset(c for c in self.caseless if c in low),
                frozenset(e for e in self.exact if e in data))

    def _scan(self, data: bytes) -> Optional[Found]:
        hits = set()

        def on_match(index, _start, _end, _flags, _context):
            hits.add(index)   # each literal is reported once (SINGLEMATCH)

        try:
            self._db.scan(data, match_event_handler=on_match)
        except hyperscan.error:
            return None       # e.g. its scratch space in use: the reference answers instead
        n = len(self.caseless)
        return (frozenset(self.caseless[i] for i in hits if i < n),
                frozenset(self.exact[i - n] for i in hits if i >= n))


def why_not_fast() -> Optional[str]:
    """None when hyperscan is in use, else why not (for `doctor`)."""
    if hyperscan is None:
        return "the hyperscan package is not installed"
    if _database((b"probe",), ()) is None:
        return "hyperscan is installed but cannot compile here (this CPU or build)"
    return None


@functools.lru_cache(maxsize=16)   # a Redactor is made for each journal line: compile once
def _database(caseless: Tuple[bytes, ...], exact: Tuple[bytes, ...]):
    if hyperscan is None:
        return None
    literals = caseless + exact
    flags = ([hyperscan.HS_FLAG_CASELESS | hyperscan.HS_FLAG_SINGLEMATCH] * len(caseless)
             + [hyperscan.HS_FLAG_SINGLEMATCH] * len(exact))
    try:
        db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        db.compile(expressions=list(literals), ids=list(range(len(literals))),
                   elements=len(literals), flags=flags, literal=True)
    except Exception:   # hyperscan.error, or a CPU it was not built for
        return None
    return db
