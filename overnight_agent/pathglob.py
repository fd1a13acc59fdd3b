"""Path globs for validation triggers, declared work-item paths and guard exemptions.

Owns: one glob language, matched against repository-relative POSIX paths: `*` and `?` stay
inside one folder, `**` crosses folders (`src/**` is everything under src/, `**/*.rs` every Rust
file at any depth), `[abc]` is a character class. A pattern is always anchored at the
repository root: `*.md` is a Markdown file at the top level only. Must not: touch the file
system. Standard library only (git hooks import it).
"""
import re
from functools import lru_cache
from typing import Iterable, List, Pattern


def check(pattern: str) -> str:
    """`pattern` if it is a usable glob; ValueError naming the problem otherwise."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise ValueError("expected a non-empty path glob, e.g. src/** or **/*.rs")
    if pattern.startswith("/") or pattern.startswith("./"):
        raise ValueError(f"{pattern!r}: globs are relative to the repository root; drop the leading "
                         f"'{pattern[:pattern.index('/') + 1]}'")
    if "\0" in pattern:
        raise ValueError(f"{pattern!r}: holds a NUL character; no path can")
    if "\\" in pattern:
        raise ValueError(f"{pattern!r}: use '/' between folders")
    if pattern.count("[") != pattern.count("]"):
        raise ValueError(f"{pattern!r}: unbalanced [ ]")
    compile_glob(pattern)
    return pattern


@lru_cache(maxsize=1024)
def compile_glob(pattern: str) -> Pattern:
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise ValueError(f"{pattern!r}: unbalanced [ ]")
            body = pattern[i + 1:end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"\Z")


def match(pattern: str, path: str) -> bool:
    return compile_glob(pattern).match(path) is not None


def any_match(patterns: Iterable[str], path: str) -> bool:
    return any(match(p, path) for p in patterns)


def matching(patterns: Iterable[str], paths: Iterable[str]) -> List[str]:
    """The paths that at least one pattern matches, in their order."""
    patterns = list(patterns)
    return [p for p in paths if any_match(patterns, p)]
