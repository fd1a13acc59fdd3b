"""Keeping secrets out of everything the tool writes: journal lines, reports, logs.

Owns: the shapes of known secrets (API tokens, cloud keys, private key blocks, credential
pairs), the exact values of secret-looking environment variables, replacing each with
`[REDACTED:<kind>]`, and doing that on byte streams whose chunks may split a secret.
Must not: touch files, git or processes (pure), or change a byte that is not part of a secret:
text that matches nothing comes back byte for byte, invalid UTF-8 included.

Every pattern except the private key block stays within one line, so a stream redacted line
by line gives the same bytes as the whole text redacted at once; private key blocks are held
whole by `StreamRedactor` until their END line. For speed `Redactor.bytes` hands the patterns
only the lines holding an anchor (the same fact again), and each pattern is tried only where
one of its matches can begin (`_apply_fast`); the result is byte for byte that of every pattern
run over the whole text (`_apply_plain`, the reference). Which anchors and environment values a
chunk of output holds is asked of `literals` (hyperscan, in one pass, where it is installed):
most output holds none, and then that one pass is all it costs.
"""
import json
import re
from collections import Counter
from typing import Callable, Dict, FrozenSet, List, Mapping, Optional, Pattern, Tuple, Union

from .literals import Found, Literals

MARK = "[REDACTED:{}]"
STREAM_CAP = 64 * 1024          # the longest partial line (or key block) a stream holds back

# An environment variable holds a secret when a part of its name (split at `_`) ends with one of
# these (OPENAI_API_KEY, GITHUB_TOKEN, PGPASSWORD; not GIT_AUTHOR_NAME or KEYBOARD_LAYOUT) and
# the name does not say it holds a path or a switch.
ENV_NAME_PART = re.compile(r"(?:KEYS?|SECRETS?|TOKENS?|PASSWORD|PASSWD|CREDENTIALS?|AUTH)$",
                           re.IGNORECASE)
ENV_NAME_NOT_SECRET = re.compile(r"_(?:FILE|PATH|DIR|SOCK|HOME|MODE|TYPE|ID_FILE)$", re.IGNORECASE)
ENV_MIN_LENGTH = 8
_PLAIN_WORDS = {"true", "false", "none", "null", "enabled", "disabled", "required", "optional"}


def _placeholder(value: str) -> bool:
    """`password`, `****`, `${TOKEN}`, `<token>`, `test-key`: words standing for a secret."""
    low = value.lower()
    return (low in ("password", "passwd", "secret", "token", "pass")
            or value.startswith(("[REDACTED", "$", "{", "%", "<", "*", "#", "@"))
            or low.startswith(("test", "fake", "mock", "dummy", "example", "sample", "your"))
            or "placeholder" in low or "example" in low or not value.strip("*xX."))


def _random_looking(value: str) -> bool:
    """A token body, not a kebab-case word: real keys always mix letters and digits."""
    return any(c.isdigit() for c in value) and any(c.isalpha() for c in value)


# --- token shapes -------------------------------------------------------------------------------

_PEM_BEGIN = r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----"
_PEM_END = r"-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----"
PEM_BEGIN = re.compile(_PEM_BEGIN)
PEM_END = re.compile(_PEM_END)
_PEM_BEGIN_BYTES = re.compile(_PEM_BEGIN.encode())
_PEM_END_BYTES = re.compile(_PEM_END.encode())

Starts = Tuple[Tuple[Pattern, int], ...]


def _starts(*regexes: str, shift: int = 0) -> Starts:
    """Where a pattern's matches begin: `shift` after each place where one of `regexes` matches
    the text with its ASCII letters lowered. They must find every match's start (none is looked
    for elsewhere), in a pass each: a regex with a literal prefix is searched as fast as str.find."""
    return tuple((re.compile(regex), shift) for regex in regexes)


# (kind, pattern, group replaced (0: all), check of that text, lowercase anchors: the pattern is
# only tried on text containing one of them, which keeps a clean megabyte of log fast; starts:
# where in that text a match can begin, the only places `_apply_fast` tries the pattern).
Shape = Tuple[str, Pattern, int, Optional[Callable[[str], bool]], Tuple[str, ...], Starts]

SHAPES: List[Shape] = [
    # A whole block, or (cut off, e.g. a truncated log) the header and the base64 lines after it.
    ("private_key", re.compile(
        _PEM_BEGIN + r"(?:[A-Za-z0-9+/=\s:,.\-\\]*?" + _PEM_END
        + r"|(?:(?:\s|\\[nr])*[A-Za-z0-9+/=]{16,})+)"), 0, None, ("private key",),
     _starts("-----begin")),
    ("anthropic", re.compile(r"(?<![A-Za-z0-9_-])sk-ant-[A-Za-z0-9_-]{20,}"), 0, None, ("sk-ant-",),
     _starts("sk-ant-")),
    ("openai", re.compile(r"(?<![A-Za-z0-9_-])sk-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
     0, _random_looking, ("sk-",), _starts("sk-")),
    ("github", re.compile(r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})"),
     0, None, ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"), _starts("gh[pousr]_|github_pat_")),
    ("aws_access_key_id", re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
     0, None, ("akia", "asia"), _starts("akia|asia")),
    ("aws_secret_access_key", re.compile(
        r"(?i:aws_?secret_?access_?key|secretaccesskey)[\"']?[ \t]*[:=][ \t]*[\"']?"
        r"([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"), 1, None, ("secret",),
     _starts("aws_?secret", "secretaccesskey")),
    ("slack_webhook", re.compile(
        r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]+"), 0, None,
     ("hooks.slack.com",), _starts(r"https://hooks\.slack\.com/")),
    ("slack", re.compile(r"(?<![A-Za-z0-9])xox[abprs]-[A-Za-z0-9-]{10,}"), 0, None, ("xox",),
     _starts("xox")),
    ("authorization", re.compile(
        r"(?i:authorization)[\"']?[ \t]*[:=][ \t]*[\"']?(?i:bearer|basic|token|bot)[ \t]+"
        r"([A-Za-z0-9._~+/-]{6,}=*)"), 1, None, ("authorization",), _starts("authorization")),
    ("bearer", re.compile(r"(?i:\bbearer)[ \t]+([A-Za-z0-9._~+/-]{20,}=*)"), 1, _random_looking,
     ("bearer",), _starts("bearer")),
    ("url_credentials", re.compile(r"(?<=://)[^/\s:@\"'<>\[\]]+:([^/\s@\"'<>]+)@"), 1,
     lambda v: not v.isdigit() and not _placeholder(v), ("://",), _starts("://", shift=3)),
]

# --- credential pairs: keep the key, redact the value ------------------------------------------

_PAIR_KINDS = (
    ("password", r"password|passwd|passphrase"),
    ("secret", r"secret[_-]?key|secret"),
    ("token", r"token"),
    ("api_key", r"api[_-]?key|apikey|access[_-]?key"),
)
_PAIR_SEP = r"[\"']?[ \t]*[:=]"
# Found by its keyword (one fast pass), then the whole key is read backwards from it.
PAIR = re.compile(
    r"(?i:(?P<word>" + "|".join(f"(?P<{kind}>{words})" for kind, words in _PAIR_KINDS) + r"))"
    r"(?P<sep>" + _PAIR_SEP + r"[ \t]*)"
    r"(?:\"(?P<dq>(?:[^\"\\\n]|\\.)*)\"|'(?P<sq>(?:[^'\\\n]|\\.)*)'"
    r"|(?P<bare>[^\s\"'&,;<>(){}\[\]`]+)(?=[\s\"'&,;<>)}\]`]|$))")
PAIR_ANCHORS = ("pass", "secret", "token", "key")
# A pair begins with its keyword and separator (`token = `, not `max_tokens 4096`): one pass a kind,
# whose words share their first letters.
PAIR_STARTS = _starts(*(f"(?:{words}){_PAIR_SEP}" for _, words in _PAIR_KINDS))
_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_TYPE_NAMES = {"str", "string", "int", "bytes", "bool", "any", "none", "null", "nil", "true", "false",
               "optional", "undefined", "float", "dict", "list", "object", "secretstr", "sensitive"}
_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
_ENV_NAME_VALUE = re.compile(r"[A-Z][A-Z0-9_]*_[A-Z0-9_]*")


def _pair_value_is_secret(value: str, key: str, word: str, sep: str, quoted: bool,
                          before: str) -> bool:
    """Tell a literal credential from code, placeholders and prose (`token: str`,
    `password=password`, `secret = config.secret`, `"token": "${TOKEN}"`)."""
    if len(value) < 4 or _placeholder(value):
        return False
    if value.lower() in _TYPE_NAMES or value.lower() == key.lower():
        return False
    if quoted:
        return not any(c.isspace() for c in value) and not _ENV_NAME_VALUE.fullmatch(value)
    if _DOTTED.fullmatch(value) or (value.isdigit() and len(value) < 8):
        return False
    if re.fullmatch(r"[A-Za-z_]+", value):
        # A plain word is a literal in env and config files, URLs and flags (`DB_PASSWORD=letmein`,
        # `?token=abcdefgh`, `--password=letmein`) and a variable's name in code (`f(token=tok)`).
        return sep == "=" and (key.isupper() or key.startswith("-") or before in ("", "\n", "?", "&"))
    return True


def is_secret_env_name(name: str) -> bool:
    """Whether an environment variable's value is treated as a secret (by its name)."""
    return (any(ENV_NAME_PART.search(part) for part in name.split("_"))
            and not ENV_NAME_NOT_SECRET.search(name))


# --- which anchors a text holds, in few passes -------------------------------------------------

_ALL_ANCHORS = tuple(sorted({a for *_, anchors, _ in SHAPES for a in anchors} | set(PAIR_ANCHORS)))
# An anchor holding another (`private key` holds `key`, `sk-ant-` holds `sk-`) gets no pass of its
# own: it is looked for only when the one it holds is found.
_HOLDING = {a: {b for b in _ALL_ANCHORS if b != a and b in a} for a in _ALL_ANCHORS}
_KEPT = frozenset(a for a in _ALL_ANCHORS if not _HOLDING[a])
_HOLDING = {a: held & _KEPT for a, held in _HOLDING.items() if held}


def _anchor_groups() -> List[Tuple[Tuple[str, ...], Pattern, Pattern]]:
    """The kept anchors grouped by first letter, each group with a str and a bytes pattern
    matching any of them: a pattern with a literal prefix is searched about as fast as str.find,
    so a group costs one pass."""
    groups: Dict[str, List[str]] = {}
    for anchor in sorted(_KEPT):
        groups.setdefault(anchor[0], []).append(anchor)
    return [(tuple(group), re.compile("|".join(map(re.escape, group))),
             re.compile(b"|".join(re.escape(a.encode()) for a in group))) for group in groups.values()]


_ANCHOR_GROUPS = _anchor_groups()
_ANCHOR_BYTES = tuple(a.encode() for a in _ALL_ANCHORS)


def _anchors_in(low: Union[str, bytes]) -> FrozenSet[str]:
    """Exactly the anchors that `low` (lowered text, or lowered bytes: every anchor is ASCII)
    holds: a pass per group, read on only while some anchor of the group is not yet found, and
    a look for an anchor holding another only when that one is found."""
    as_bytes = not isinstance(low, str)
    present = set()
    for group, finder, bytes_finder in _ANCHOR_GROUPS:
        for m in (bytes_finder if as_bytes else finder).finditer(low):
            present.add(m.group().decode() if as_bytes else m.group())
            if len(group) == 1 or present.issuperset(group):
                break
    present.update(a for a, held in _HOLDING.items()
                   if not held.isdisjoint(present) and (a.encode() if as_bytes else a) in low)
    return frozenset(present)


_BYTES_PER_LINE_TO_REDACT = 1024     # more lines than one a KiB: redact the whole chunk, it costs less


class Redactor:
    """Replaces secrets in text with `[REDACTED:<kind>]`; counts what it replaced."""

    def __init__(self, env: Optional[Mapping[str, str]] = None, engine: str = "auto"):
        """`engine`: what finds anchors in bytes (see `literals`): "auto", "hyperscan" or "python"."""
        self.counts: Counter = Counter()
        values: Dict[str, str] = {}
        for name, value in (env or {}).items():
            if not is_secret_env_name(name):
                continue
            for piece in str(value).splitlines():     # a multi-line value: each line on its own
                piece = piece.strip()
                if (len(piece) >= ENV_MIN_LENGTH and piece.lower() not in _PLAIN_WORDS
                        and not piece.startswith(("/", "~/", "./")) and not piece.isdigit()):
                    values.setdefault(piece, name)
        self._env_values = values
        self._env = (re.compile("|".join(re.escape(v) for v in sorted(values, key=len, reverse=True)))
                     if values else None)
        self._env_starts = tuple((re.compile(re.escape(v)), 0) for v in values)
        self._env_bytes = tuple(v.encode("utf-8", "surrogateescape") for v in values)
        # The marks put in name the variables: `_apply_fast` needs them free of `_FOLDS` too.
        self._marks_ascii = all(name.isascii() for name in values.values())
        self._literals = Literals(_ANCHOR_BYTES, self._env_bytes, engine)

    @property
    def count(self) -> int:
        """How many secrets this redactor has replaced so far."""
        return sum(self.counts.values())

    def text(self, s: str) -> str:
        """`s` with every secret replaced; the same object back when nothing matched."""
        return self._text(s)

    def _text(self, s: str, anchors: Optional[FrozenSet[str]] = None, env: bool = True) -> str:
        """`text`, told what `bytes` found already (see `_apply`)."""
        found: Counter = Counter()
        out = self._apply(s, found, anchors, env)
        self.counts.update(found)
        return out

    def scan(self, s: str) -> List[str]:
        """The kinds of secret in `s`, in order of first appearance (nothing is counted)."""
        found: Counter = Counter()
        self._apply(s, found)
        return list(found)

    def json_line(self, line: bytes) -> bytes:
        """One line of a JSON-lines stream (codex's `--json` events). Text a command printed sits
        there JSON-escaped (`{\\"password\\": \\"...\\"}`), which the text patterns do not see:
        decode, redact every string, re-encode. Unchanged bytes when nothing is found."""
        body = line.rstrip(b"\r\n")
        if not body.startswith(b"{") or b"\\" not in body:
            return line
        try:
            obj = json.loads(body)
        except ValueError:
            return line
        before = self.count
        cleaned = self.data(obj)
        if self.count == before:
            return line
        return json.dumps(cleaned, ensure_ascii=False, separators=(",", ":")).encode() + line[len(body):]

    def data(self, obj):
        """`obj` (strings in nested dicts, lists and tuples) with every string redacted."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {k: self.data(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.data(v) for v in obj)
        return obj

    @property
    def engine(self) -> str:
        """What finds the anchors in bytes: "hyperscan" or "python" (see `literals`)."""
        return self._literals.engine

    def look(self, data: bytes) -> Found:
        """The anchors (lowered, as bytes) and environment values `data` holds: nothing to
        redact when both are empty."""
        return self._literals.present(data)

    def bytes(self, data: bytes, look: Optional[Found] = None) -> bytes:
        """`data` redacted; bytes that are no secret (invalid UTF-8 included) come back as they
        were. `look`: what `look(data)` said, if it was asked already."""
        found, values = self.look(data) if look is None else look
        if not found and not values:
            return data  # the common case, decided on bytes: no decoding, no pattern tried
        anchors = frozenset(a.decode() for a in found)
        low = data.lower()   # every anchor is ASCII: lowering the bytes is enough
        spans = None
        # Not line by line: a private key block spans lines, and outside ASCII (`_FOLDS`) a line
        # with no anchor in its bytes may still match.
        if "private key" not in anchors and not _folds_to_ascii(data):
            looks = [(low, a.encode()) for a in anchors & _KEPT] + [(data, v) for v in values]
            spans = _lines_holding(looks, limit=len(data) // _BYTES_PER_LINE_TO_REDACT)
        if spans is None:
            text = data.decode("utf-8", "surrogateescape")
            out = self._text(text, anchors, env=bool(values))
            return data if out is text else out.encode("utf-8", "surrogateescape")
        return self._redact_lines(data, spans, anchors, env=bool(values))

    # --- internals ---------------------------------------------------------------------------

    def _redact_lines(self, data: bytes, spans: List[Tuple[int, int]], anchors: FrozenSet[str],
                      env: bool) -> bytes:
        """`data` with only the lines at `spans` redacted, all at once: the patterns see them as
        they see the whole text (each a line of its own, in the same order, holding every anchor
        `data` holds), and no other line could change. Redacting never adds or removes a line, so
        the lines go back where they were."""
        text = b"\n".join(data[start:end] for start, end in spans).decode("utf-8", "surrogateescape")
        out = self._text(text, anchors, env)
        if out is text:
            return data
        parts, done = [], 0
        for (start, end), line in zip(spans, out.encode("utf-8", "surrogateescape").split(b"\n")):
            parts += (data[done:start], line)
            done = end
        parts.append(data[done:])
        return b"".join(parts)

    def _apply(self, s: str, found: Counter, anchors: Optional[FrozenSet[str]] = None,
               env: bool = True) -> str:
        """`s` redacted. `bytes`, having looked already, may tell which anchors `s` holds
        (`_anchors_in`) and that it holds no environment secret (`env` False)."""
        if self._marks_ascii and not _folds_to_ascii(s):
            return self._apply_fast(s, found, anchors, env)
        return self._apply_plain(s, found)

    def _apply_plain(self, s: str, found: Counter) -> str:
        """Every pattern whose anchor is in `s` run over all of it: the reference."""
        out, low = s, s.lower()
        for kind, pattern, group, check, anchors, _ in SHAPES:
            if any(a in low for a in anchors):
                out = pattern.sub(_shape_repl(kind, group, check, found), out)
        if self._env is not None:
            out = self._env.sub(self._env_repl(found), out)
        if any(a in low for a in PAIR_ANCHORS):
            out = PAIR.sub(_pair_repl(found), out)
        return s if out == s else out

    def _apply_fast(self, s: str, found: Counter, anchors: Optional[FrozenSet[str]], env: bool) -> str:
        """What `_apply_plain` gives (the same patterns run, in turn, on the same text), each
        tried only where its starts say a match can begin: a regex without a literal prefix
        tries every offset, slowly. Exact as long as a case-insensitive match is one of ASCII
        letters only: no `_FOLDS` in the text, nor in the marks put in."""
        out, low = s, _lowered(s)
        anchors = _anchors_in(low) if anchors is None else anchors
        for kind, pattern, group, check, shape_anchors, starts in SHAPES:
            if anchors.isdisjoint(shape_anchors):
                continue
            changed = _sub_at(pattern, out, _offsets(low, starts), _shape_repl(kind, group, check, found))
            if changed is not out:
                out, low = changed, _lowered(changed)   # offsets moved: find the next starts anew
        if self._env is not None and (env or out is not s):   # a mark put in may hold a value
            changed = _sub_at(self._env, out, _offsets(out, self._env_starts), self._env_repl(found))
            if changed is not out:
                out, low = changed, _lowered(changed)
        if not anchors.isdisjoint(PAIR_ANCHORS):
            out = _sub_at(PAIR, out, _offsets(low, PAIR_STARTS), _pair_repl(found))
        return s if out == s else out

    def _env_repl(self, found: Counter):
        def repl(m):
            kind = "env:" + self._env_values[m.group(0)]
            found[kind] += 1
            return MARK.format(kind)
        return repl


def _shape_repl(kind: str, group: int, check, found: Counter):
    def repl(m):
        value = m.group(group)
        if check is not None and not check(value):
            return m.group(0)
        found[kind] += 1
        start, end = m.span(group)
        s = m.string
        return s[m.start():start] + MARK.format(kind) + s[end:m.end()]
    return repl


def _pair_repl(found: Counter):
    def repl(m):
        s = m.string
        quoted = m.group("bare") is None
        group = "dq" if m.group("dq") is not None else "sq" if m.group("sq") is not None else "bare"
        value = m.group(group)
        begin = m.start()
        while begin and s[begin - 1] in _KEY_CHARS:
            begin -= 1
        key, before = s[begin:m.end("word")], (s[begin - 1] if begin else "")
        if not _pair_value_is_secret(value, key, m.group("word"), m.group("sep"), quoted, before):
            return m.group(0)
        kind = next(k for k, _ in _PAIR_KINDS if m.group(k) is not None)
        found[kind] += 1
        start, end = m.span(group)
        return s[m.start():start] + MARK.format(kind) + s[end:m.end()]
    return repl


def _lowered(s: str) -> str:
    """`s` with its ASCII letters lowered, all that finding an anchor or a start needs (no other
    letter lowers to one but `_FOLDS`), and 2-3 times faster than `s.lower()` outside ASCII."""
    if s.isascii():
        return s.lower()
    return s.encode("utf-8", "surrogatepass").lower().decode("utf-8", "surrogatepass")


def _lines_holding(looks: List[Tuple[bytes, bytes]], limit: int) -> Optional[List[Tuple[int, int]]]:
    """(start, end) of each line holding a literal, in order, for `looks` of (text, literal)
    whose texts have the same lines (the bytes and their lowered copy); None if over `limit`."""
    lines: Dict[int, int] = {}
    for text, literal in looks:
        at = text.find(literal)
        while at >= 0:
            start = text.rfind(b"\n", 0, at) + 1
            end = text.find(b"\n", at + len(literal))
            end = len(text) if end < 0 else end
            lines[start] = end
            if len(lines) > limit:
                return None
            at = text.find(literal, end)
    return sorted(lines.items())


def _offsets(text: str, starts: Starts) -> List[int]:
    """The sorted offsets in `text` where `starts` say a match can begin."""
    offsets = set()
    for finder, shift in starts:
        found = finder.search(text)
        while found is not None:
            offsets.add(found.start() + shift)
            found = finder.search(text, found.start() + 1)   # the next may overlap this one
    return sorted(offsets)


def _sub_at(pattern: Pattern, s: str, offsets: List[int], repl) -> str:
    """`pattern.sub(repl, s)` when no match can begin but at `offsets` (and none is empty);
    `s` itself if no match is found."""
    parts, done = [], 0
    for at in offsets:
        if at < done:
            continue
        m = pattern.match(s, at)
        if m is not None:
            parts += (s[done:at], repl(m))
            done = m.end()
    if not parts:
        return s
    parts.append(s[done:])
    return "".join(parts)


# Characters outside ASCII that lowering or a case-insensitive pattern turns into ASCII letters
# (dotted I, dotless i, long s, Kelvin sign): a text holding one is redacted by `_apply_plain`, and
# bytes holding one by whole chunk, as a line without an anchor could then still hold a secret.
_FOLDS = ("\u0130", "\u0131", "\u017f", "\u212a")
_FOLDS_UTF8 = tuple(c.encode() for c in _FOLDS)


def _folds_to_ascii(text: Union[str, bytes]) -> bool:
    """Whether `text` (str or UTF-8 bytes) holds one of `_FOLDS`."""
    if text.isascii():
        return False
    if isinstance(text, str):
        return any(c in text for c in _FOLDS)
    return any(c[:1] in text and c in text for c in _FOLDS_UTF8)   # a lone byte is found fastest


_SHAPES_ONLY = Redactor(None)


def scan(text: str) -> List[str]:
    """The kinds of known token shapes and credential pairs in `text` (no environment values)."""
    return _SHAPES_ONLY.scan(text)


def redact(text: str, env: Optional[Mapping[str, str]] = None) -> str:
    """One-off: `text` redacted with the shapes and, if given, the secrets of `env`."""
    return Redactor(env).text(text)


class StreamRedactor:
    """Redacts a byte stream that arrives in chunks: a secret split between two chunks is
    still found, because only whole lines are passed on (a partial line is held back, up to
    `cap` bytes), and a private key block is held until its END line.

    `feed(chunk)` returns what may be written now; `flush()` returns the rest at the end.
    `pieces(buffer, end)` is `feed` without copies: the chunk is `buffer[:end]`, and what may be
    written comes back as a list of buffers, views of `buffer` where its lines are unchanged
    (valid until `buffer` is reused).
    """

    def __init__(self, redactor: Redactor, cap: int = STREAM_CAP, json_lines: bool = False):
        self.redactor = redactor
        self.cap = cap
        self.json_lines = json_lines    # lines are JSON objects: see Redactor.json_line
        self._partial = bytearray()     # after the last newline
        self._block = bytearray()       # whole lines of an unfinished private key block

    def _redact(self, data: bytes, look: Optional[Found] = None) -> bytes:
        if self.json_lines:
            data = b"".join(self.redactor.json_line(line) for line in data.splitlines(keepends=True))
        return self.redactor.bytes(data, look)

    def feed(self, data) -> bytes:
        return b"".join(self.pieces(data))

    def pieces(self, data, end: Optional[int] = None) -> list:
        """`feed(data[:end])`, as buffers to write in turn (see the class)."""
        end = len(data) if end is None else end
        view = memoryview(data)[:end]
        cut = data.rfind(b"\n", 0, end) + 1
        if not cut:
            self._partial += view
            return [self._overlong()] if len(self._partial) > self.cap else []
        out = []
        if self._partial:   # the line it ends: joined on its own, the rest is not copied
            first = data.find(b"\n", 0, end) + 1
            self._partial += view[:first]
            head, self._partial = bytes(self._partial), bytearray()
            out.append(self._lines(head))
            view = view[first:cut]
        else:
            view = view[:cut]
        self._partial = bytearray(memoryview(data)[cut:end])
        out.append(self._lines(view))
        if len(self._partial) > self.cap:
            out.append(self._overlong())
        return [piece for piece in out if len(piece)]

    def flush(self) -> bytes:
        rest = bytes(self._block + self._partial)
        self._block.clear()
        self._partial.clear()
        return self._redact(rest) if rest else b""

    def _lines(self, data):
        """Whole lines (bytes or a view): redacted now, except an unfinished key block, which
        is held. Lines with nothing to redact come back as they were given."""
        if self._block:
            self._block += data
            end = _PEM_END_BYTES.search(self._block)
            if end is None:
                if len(self._block) <= self.cap:
                    return b""
                data, self._block = bytes(self._block), bytearray()   # too long to be a key
                return self._redact(data)
            eol = self._block.find(b"\n", end.end()) + 1 or len(self._block)
            done = self._redact(bytes(self._block[:eol]))
            data = bytes(self._block[eol:])
            self._block.clear()
            return done + self._lines(data) if data else done
        if not len(data):
            return b""
        # An event stream's lines are JSON-decoded before they are looked at; other output is
        # looked at once, here: no anchor means no secret, and no key block either.
        look = None if self.json_lines else self.redactor.look(data)
        if look is not None and not look[0] and not look[1]:
            return data
        data = bytes(data)
        begin = _open_block(data) if look is None or _KEY_ANCHOR in look[0] else None
        if begin is None:
            return self._redact(data, look)
        start = data.rfind(b"\n", 0, begin) + 1
        self._block += data[start:]
        return self._redact(data[:start]) + self._lines(b"")

    def _overlong(self) -> bytes:
        """A line longer than the cap: pass on all of it but the tail after its last separator."""
        buf = self._partial
        if self._block:
            data = bytes(self._block + buf)
            self._block.clear()
            buf.clear()
            return self._redact(data)
        cut = max(buf.rfind(b","), buf.rfind(b" "), buf.rfind(b"\t")) + 1
        if cut == 0 or len(buf) - cut > self.cap // 2:
            cut = len(buf)
        data = bytes(buf[:cut])
        del buf[:cut]
        return self._redact(data)


_KEY_ANCHOR = b"private key"     # in every BEGIN line of a private key block


def _open_block(data: bytes) -> Optional[int]:
    """Where the last BEGIN of a private key without its END starts in `data`, else None."""
    last = None
    for m in _PEM_BEGIN_BYTES.finditer(data):
        last = m
    if last is None or _PEM_END_BYTES.search(data, last.end()):
        return None
    return last.start()
