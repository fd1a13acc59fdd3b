"""Keeping secrets out of everything the tool writes: journal lines, reports, logs.

Owns: the shapes of known secrets (API tokens, cloud keys, private key blocks, credential
pairs), the exact values of secret-looking environment variables, replacing each with
`[REDACTED:<kind>]`, and doing that on byte streams whose chunks may split a secret.
Must not: touch files, git or processes (pure, standard library only), or change a byte that
is not part of a secret: text that matches nothing comes back byte for byte, invalid UTF-8
included.

Every pattern except the private key block stays within one line, so a stream redacted line
by line gives the same bytes as the whole text redacted at once; private key blocks are held
whole by `StreamRedactor` until their END line.
"""
import json
import re
from collections import Counter
from typing import Callable, Dict, List, Mapping, Optional, Pattern, Tuple

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

# (kind, pattern, group replaced (0: all), check of that text, lowercase anchors: the pattern is
# only tried on text containing one of them, which keeps a clean megabyte of log fast).
Shape = Tuple[str, Pattern, int, Optional[Callable[[str], bool]], Tuple[str, ...]]

SHAPES: List[Shape] = [
    # A whole block, or (cut off, e.g. a truncated log) the header and the base64 lines after it.
    ("private_key", re.compile(
        _PEM_BEGIN + r"(?:[A-Za-z0-9+/=\s:,.\-\\]*?" + _PEM_END
        + r"|(?:(?:\s|\\[nr])*[A-Za-z0-9+/=]{16,})+)"), 0, None, ("private key",)),
    ("anthropic", re.compile(r"(?<![A-Za-z0-9_-])sk-ant-[A-Za-z0-9_-]{20,}"), 0, None, ("sk-ant-",)),
    ("openai", re.compile(r"(?<![A-Za-z0-9_-])sk-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
     0, _random_looking, ("sk-",)),
    ("github", re.compile(r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})"),
     0, None, ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_")),
    ("aws_access_key_id", re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
     0, None, ("akia", "asia")),
    ("aws_secret_access_key", re.compile(
        r"(?i:aws_?secret_?access_?key|secretaccesskey)[\"']?[ \t]*[:=][ \t]*[\"']?"
        r"([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"), 1, None, ("secret",)),
    ("slack_webhook", re.compile(
        r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]+"), 0, None,
     ("hooks.slack.com",)),
    ("slack", re.compile(r"(?<![A-Za-z0-9])xox[abprs]-[A-Za-z0-9-]{10,}"), 0, None, ("xox",)),
    ("authorization", re.compile(
        r"(?i:authorization)[\"']?[ \t]*[:=][ \t]*[\"']?(?i:bearer|basic|token|bot)[ \t]+"
        r"([A-Za-z0-9._~+/-]{6,}=*)"), 1, None, ("authorization",)),
    ("bearer", re.compile(r"(?i:\bbearer)[ \t]+([A-Za-z0-9._~+/-]{20,}=*)"), 1, _random_looking,
     ("bearer",)),
    ("url_credentials", re.compile(r"(?<=://)[^/\s:@\"'<>\[\]]+:([^/\s@\"'<>]+)@"), 1,
     lambda v: not v.isdigit() and not _placeholder(v), ("://",)),
]

# --- credential pairs: keep the key, redact the value ------------------------------------------

_PAIR_KINDS = (
    ("password", r"password|passwd|passphrase"),
    ("secret", r"secret[_-]?key|secret"),
    ("token", r"token"),
    ("api_key", r"api[_-]?key|apikey|access[_-]?key"),
)
# Found by its keyword (one fast pass), then the whole key is read backwards from it.
PAIR = re.compile(
    r"(?i:(?P<word>" + "|".join(f"(?P<{kind}>{words})" for kind, words in _PAIR_KINDS) + r"))"
    r"(?P<sep>[\"']?[ \t]*[:=][ \t]*)"
    r"(?:\"(?P<dq>(?:[^\"\\\n]|\\.)*)\"|'(?P<sq>(?:[^'\\\n]|\\.)*)'"
    r"|(?P<bare>[^\s\"'&,;<>(){}\[\]`]+)(?=[\s\"'&,;<>)}\]`]|$))")
PAIR_ANCHORS = ("pass", "secret", "token", "key")
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


class Redactor:
    """Replaces secrets in text with `[REDACTED:<kind>]`; counts what it replaced."""

    def __init__(self, env: Optional[Mapping[str, str]] = None):
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

    @property
    def count(self) -> int:
        """How many secrets this redactor has replaced so far."""
        return sum(self.counts.values())

    def text(self, s: str) -> str:
        """`s` with every secret replaced; the same object back when nothing matched."""
        found: Counter = Counter()
        out = self._apply(s, found)
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

    def bytes(self, data: bytes) -> bytes:
        """`data` redacted; bytes that are no secret (invalid UTF-8 included) come back as they were."""
        if not self._may_hold_secret(data):
            return data  # the common case, decided on bytes: no decoding, no regex pass
        text = data.decode("utf-8", "surrogateescape")
        out = self.text(text)
        return data if out is text else out.encode("utf-8", "surrogateescape")

    # --- internals ---------------------------------------------------------------------------

    def _may_hold_secret(self, data: bytes) -> bool:
        """Whether any pattern's anchor, or a secret value of the environment, is in `data`
        (every anchor is ASCII, so lowering the bytes is enough)."""
        low = data.lower()
        if any(anchor in low for anchor in _ALL_ANCHORS):
            return True
        if self._env_values:
            return any(value.encode("utf-8", "surrogateescape") in data for value in self._env_values)
        return False

    def _apply(self, s: str, found: Counter) -> str:
        out, low = s, s.lower()
        for kind, pattern, group, check, anchors in SHAPES:
            if any(a in low for a in anchors):
                out = _sub(pattern, out, group, kind, check, found)
        if self._env is not None:
            out = self._sub_env(out, found)
        if any(a in low for a in PAIR_ANCHORS):
            out = self._sub_pairs(out, found)
        return s if out == s else out

    def _sub_env(self, s: str, found: Counter) -> str:
        def repl(m):
            kind = "env:" + self._env_values[m.group(0)]
            found[kind] += 1
            return MARK.format(kind)
        return self._env.sub(repl, s)

    @staticmethod
    def _sub_pairs(s: str, found: Counter) -> str:
        def repl(m):
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
        return PAIR.sub(repl, s)


def _sub(pattern: Pattern, s: str, group: int, kind: str, check, found: Counter) -> str:
    def repl(m):
        value = m.group(group)
        if check is not None and not check(value):
            return m.group(0)
        found[kind] += 1
        start, end = m.span(group)
        return s[m.start():start] + MARK.format(kind) + s[end:m.end()]
    return pattern.sub(repl, s)


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
    """

    def __init__(self, redactor: Redactor, cap: int = STREAM_CAP, json_lines: bool = False):
        self.redactor = redactor
        self.cap = cap
        self.json_lines = json_lines    # lines are JSON objects: see Redactor.json_line
        self._partial = bytearray()     # after the last newline
        self._block = bytearray()       # whole lines of an unfinished private key block

    def _redact(self, data: bytes) -> bytes:
        if self.json_lines:
            data = b"".join(self.redactor.json_line(line) for line in data.splitlines(keepends=True))
        return self.redactor.bytes(data)

    def feed(self, data: bytes) -> bytes:
        self._partial += data
        cut = self._partial.rfind(b"\n") + 1
        out = bytearray()
        if cut:
            lines = bytes(self._partial[:cut])
            del self._partial[:cut]
            out += self._lines(lines)
        if len(self._partial) > self.cap:
            out += self._overlong()
        return bytes(out)

    def flush(self) -> bytes:
        rest = bytes(self._block + self._partial)
        self._block.clear()
        self._partial.clear()
        return self._redact(rest) if rest else b""

    def _lines(self, data: bytes) -> bytes:
        """Whole lines: redacted now, except an unfinished key block, which is held."""
        out = bytearray()
        if self._block:
            self._block += data
            data = b""
            end = PEM_END.search(self._block.decode("latin-1"))
            if end is None:
                if len(self._block) <= self.cap:
                    return b""
                data, self._block = bytes(self._block), bytearray()   # too long to be a key
                return self._redact(data)
            eol = self._block.find(b"\n", end.end()) + 1 or len(self._block)
            out += self._redact(bytes(self._block[:eol]))
            data = bytes(self._block[eol:])
            self._block.clear()
        if data:
            text = data.decode("latin-1")          # byte offsets == character offsets
            begin = _open_block(text)
            if begin is None:
                out += self._redact(data)
            else:
                start = text.rfind("\n", 0, begin) + 1
                out += self._redact(data[:start])
                self._block += data[start:]
                out += self._lines(b"")
        return bytes(out)

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


def _open_block(text: str) -> Optional[int]:
    """Where the last BEGIN of a private key without its END starts in `text`, else None."""
    last = None
    for m in PEM_BEGIN.finditer(text):
        last = m
    if last is None or PEM_END.search(text, last.end()):
        return None
    return last.start()


_ALL_ANCHORS = tuple(sorted({a.encode() for *_, anchors in SHAPES for a in anchors}
                            | {a.encode() for a in PAIR_ANCHORS}))

