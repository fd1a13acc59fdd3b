"""Secrets kept out: token shapes, credential pairs and environment values are redacted, in text
and in byte streams split anywhere; everything else passes byte for byte."""
import json
import random
import uuid
from pathlib import Path

import pytest

from overnight_agent import redact
from overnight_agent.redact import Redactor, StreamRedactor

from secretkit import (ANTHROPIC, AWS_ID, AWS_SECRET, AWS_STS_ID, ENV, ENV_VALUE, FORMS, GITHUB,
                       GITHUB_OAUTH, GITHUB_PAT, JWT, OPENAI, PEM, PEM_BODY, SLACK, SLACK_HOOK)


@pytest.mark.parametrize("form,secret,kind", FORMS, ids=[f"{k}-{i}" for i, (_, _, k) in enumerate(FORMS)])
def test_every_form_of_a_planted_secret_is_redacted(form, secret, kind):
    redactor = Redactor(ENV)
    out = redactor.text(form)
    assert secret not in out
    assert f"[REDACTED:{kind}]" in out
    assert kind in redactor.scan(form)
    assert redactor.count >= 1 and redactor.counts[kind] >= 1
    assert redactor.text(out) == out, "redacting twice changes nothing"


@pytest.mark.parametrize("form,secret,kind", FORMS, ids=[f"{k}-{i}" for i, (_, _, k) in enumerate(FORMS)])
def test_a_secret_split_across_stream_chunks_at_every_offset_is_redacted(form, secret, kind):
    data = ("before\n" + form + "\nafter line\n").encode()
    expected = Redactor(ENV).bytes(data)
    assert secret.encode() not in expected
    for cut in range(1, len(data)):
        stream = StreamRedactor(Redactor(ENV))
        out = stream.feed(data[:cut]) + stream.feed(data[cut:]) + stream.flush()
        assert out == expected, f"split at byte {cut}"


def test_a_private_key_fed_a_byte_at_a_time_is_held_until_its_end_line():
    data = f"log start\n{PEM}\nlog end\n".encode()
    stream = StreamRedactor(Redactor())
    pieces = [stream.feed(data[i:i + 1]) for i in range(len(data))]
    out = b"".join(pieces) + stream.flush()
    assert out == b"log start\n[REDACTED:private_key]\nlog end\n"
    held = b"".join(pieces[:data.index(b"-----END")])
    assert b"MIIE" not in held and held.startswith(b"log start\n")


def test_a_cut_off_private_key_is_still_redacted():
    data = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{PEM_BODY}".encode()
    stream = StreamRedactor(Redactor())
    out = stream.feed(data) + stream.flush()
    assert b"MIIE" not in out and b"[REDACTED:private_key]" in out


def test_several_secrets_on_one_line_and_kinds_in_order():
    line = f"a={OPENAI} b={AWS_ID} c={GITHUB}"
    assert redact.scan(line) == ["openai", "github", "aws_access_key_id"]
    out = Redactor().text(line)
    assert out == "a=[REDACTED:openai] b=[REDACTED:aws_access_key_id] c=[REDACTED:github]"


def test_environment_values_only_for_secret_names_and_real_values():
    redactor = Redactor(ENV)
    text = "Overnight Agent pushed from /run/user/0/agent.sock with abc in /usr/bin:/bin"
    assert redactor.text(text) is text
    assert redact.is_secret_env_name("OPENAI_API_KEY") and redact.is_secret_env_name("PGPASSWORD")
    assert redact.is_secret_env_name("NPM_AUTH_TOKEN") and redact.is_secret_env_name("AWS_SECRET_ACCESS_KEY")
    assert not redact.is_secret_env_name("GIT_AUTHOR_NAME") and not redact.is_secret_env_name("KEYBOARD")
    assert not redact.is_secret_env_name("SSH_AUTH_SOCK") and not redact.is_secret_env_name("GNUPG_KEY_FILE")
    multi = Redactor({"DEPLOY_KEY": "first-line-secret\nsecond-line-secret"})
    assert multi.text("x second-line-secret y") == "x [REDACTED:env:DEPLOY_KEY] y"
    # the module-level scan knows shapes only, never this environment
    assert redact.scan(f"the value {ENV_VALUE}") == []


def test_scan_counts_nothing_and_text_counts_every_redaction():
    redactor = Redactor()
    assert redactor.scan(f"{OPENAI} {GITHUB}") == ["openai", "github"] and redactor.count == 0
    redactor.text(f"{OPENAI} {OPENAI} {GITHUB}")
    assert redactor.count == 3 and redactor.counts == {"openai": 2, "github": 1}
    nested = redactor.data({"a": [f"x {GITHUB}", 3, None], "b": (OPENAI,)})
    assert nested == {"a": ["x [REDACTED:github]", 3, None], "b": ("[REDACTED:openai]",)}


ORDINARY_CODE = """\
import os
token = get_token()
max_tokens = 4096
usage = {"input_tokens": 200, "cached_input_tokens": 0, "output_tokens": 40}
def login(user: str, password: str) -> bool:
    password = os.environ["DB_PASSWORD"]
    headers = {"Authorization": f"Bearer {token}"}
    api_key: Optional[str] = None
    secret = None
    self.token = token
    connect(host=host, password=db_password, token=token)
    return check(api_key=api_key, secret_key=settings.SECRET_KEY)
TOKEN_ENV = "GITHUB_TOKEN"
api_key = os.environ.get("OPENAI_API_KEY", "")
parser.add_argument("--token", help="the token: read from $API_TOKEN")
log.info("token.refreshed", tokens=3)
# Ask the operator for the password: it is not in the repo.
# A private key starts with -----BEGIN RSA PRIVATE KEY----- and must never be committed.
url = f"https://{user}:{password}@{host}/"
task-list-generation-for-everything and risk-assessment-report-2024-and-more
ssh://git@github.com:org/repo.git and http://localhost:8080/path
"""


def test_no_false_positive_on_ordinary_code():
    redactor = Redactor(ENV)
    assert redactor.text(ORDINARY_CODE) == ORDINARY_CODE
    assert redact.scan(ORDINARY_CODE) == []


def test_no_false_positive_on_git_shas_uuids_and_this_package():
    rng = random.Random(7)
    shas = "\n".join("".join(rng.choice("0123456789abcdef") for _ in range(40)) for _ in range(500))
    uuids = "\n".join(str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(500))
    both = f"commit {shas}\nthread {uuids}\n"
    assert Redactor(ENV).text(both) == both
    package = Path(redact.__file__).parent
    for path in sorted(package.rglob("*.py")):
        if path.name == "redact.py":
            continue
        text = path.read_text(encoding="utf-8")
        assert redact.scan(text) == [], f"{path.name} looks like it holds a secret"


def _feed_in_chunks(stream, data: bytes, next_size) -> bytes:
    """Everything `stream` gives for `data` fed in chunks of `next_size()` bytes, flushed."""
    out, i = bytearray(), 0
    while i < len(data):
        n = next_size()
        out += stream.feed(data[i:i + n])
        i += n
    return bytes(out + stream.flush())


@pytest.mark.parametrize("seed", range(12))
def test_stream_passthrough_is_byte_exact_for_random_binary(seed):
    rng = random.Random(seed)
    data = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 60000)))
    if seed % 3 == 0:
        data = data.replace(b"\x00", b"\n")           # many lines
    stream = StreamRedactor(Redactor(ENV), cap=4096 if seed % 2 else redact.STREAM_CAP)
    assert _feed_in_chunks(stream, data, lambda: rng.randint(1, 9000)) == data


@pytest.mark.parametrize("seed", range(6))
def test_stream_passthrough_is_byte_exact_for_utf8_text_split_inside_characters(seed):
    rng = random.Random(seed)
    alphabet = "abc xyz 012 ÄÖÜ ß é ñ ☃ 漢字 日本語 😀🚀 — ‘’ \t\n"
    text = "".join(rng.choice(alphabet) for _ in range(20000))
    data = text.encode("utf-8")
    stream = StreamRedactor(Redactor(ENV), cap=1000)
    assert _feed_in_chunks(stream, data, lambda: rng.randint(1, 700)) == data


def test_invalid_utf8_around_a_secret_is_kept_and_the_secret_is_not():
    data = b"\xff\xfe bin \x80" + GITHUB.encode() + b" \xc3(\n\xed\xa0\x80 tail"
    stream = StreamRedactor(Redactor())
    out = stream.feed(data) + stream.flush()
    assert out == b"\xff\xfe bin \x80[REDACTED:github] \xc3(\n\xed\xa0\x80 tail"


def test_an_overlong_line_is_passed_on_redacted_without_waiting_for_its_end():
    stream = StreamRedactor(Redactor(), cap=1024)
    head = (f"{GITHUB}, " + "x" * 2000 + ", ").encode()
    out = stream.feed(head)
    assert out and GITHUB.encode() not in out and out.startswith(b"[REDACTED:github], ")
    rest = stream.feed(b"tail\n") + stream.flush()
    assert (out + rest).replace(b"[REDACTED:github]", GITHUB.encode()) == head + b"tail\n"


def test_json_escaped_secrets_in_a_json_lines_stream_are_redacted():
    # What a command printed reaches codex's --json stdout JSON-escaped inside a string.
    printed = "\n".join(form for form, _, _ in FORMS)
    event = json.dumps({"type": "item.completed", "item": {"aggregated_output": printed}}) + "\n"
    plain = b'{"type":"turn.started"}\n'
    stream = StreamRedactor(Redactor(ENV), json_lines=True)
    data = (plain + event.encode()) * 2
    out = b"".join(stream.feed(data[i:i + 7]) for i in range(0, len(data), 7)) + stream.flush()
    for _, secret, _ in FORMS:
        assert secret.encode() not in out, secret
    lines = out.splitlines(keepends=True)
    assert lines[0] == plain and json.loads(lines[1])["type"] == "item.completed"


# --- a stream redacted chunk by chunk gives the bytes and counts of the whole text at once, as
# every pattern run over all of it does (`_apply_plain`, the reference the fast paths must match) --

_WORDS = ["the", "agent", "ran", "tests", "café", "naïve", "日本語", "✓", "—", "résumé", "ok", "done",
          "build", "0x1f", "42", "path/to/file.py", "a,b", "x=1", "user@host", "--flag"]
# Anchors of the patterns (`token`, `key`, `PASSED`, `://`, `sk-`...) with no secret after them.
_NEAR_MISSES = [
    "tests/test_auth.py::test_refresh_token PASSED [ 42%]", "WARN cache: key user:42 not found",
    "GET https://example.com/x 200", "token: str", "api_key = None", "password=password",
    "the secret is safe", "Bearer short", "Authorization: see docs", "sk-short", "ghp_short",
    "AKIA123", "xoxb", "hooks.slack.com/nothing", "ssh://git@github.com:org/repo.git",
    "max_tokens = 4096", "passphrase: <ask the operator>", "keyboard layout", "ASIA pacific",
]
_LONG_LINE_SECRETS = [OPENAI, GITHUB, AWS_ID, ENV_VALUE, "password=Hunter2-sailboat",
                      "https://deploy:Pa55w0rd-Xyz@git.example.com/repo.git", SLACK, ANTHROPIC]
_MORE_SECRETS = [f"pushing with {GITHUB_PAT} now", f"Authorization: Basic {AWS_SECRET}",
                 "PGPASSWORD is hunter2hunter2 here", f"x {OPENAI} y {AWS_ID} z {GITHUB}",
                 f"curl -H \"Authorization: Bearer {JWT}\" {SLACK_HOOK}"]
# Every way each pattern's match can begin (`_apply_fast` tries a pattern only there).
_SPELLINGS = [f"AWSSecretAccessKey={AWS_SECRET}", f"awssecret_accesskey: '{AWS_SECRET}'",
              f"aws_secretaccess_key = {AWS_SECRET}", f"secretaccesskey={AWS_SECRET}",
              "apikey=Zq81lmPaWx api-key: 'k9x8c7v6' Access-Key=Qw12Er34 accesskey: \"Zx98Cv76\"",
              "secret-key=abc123def456 SECRET_KEY: 'x1y2z3w4' passphrase: Hunter2-sail",
              "PASSWD=Hunter2-sailboat Token: Zq81lmPaWx", "https://a:b@c://user:Pw12ab34@host/x",
              f"{GITHUB_OAUTH.replace('gho_', 'ghs_')} {GITHUB_OAUTH.replace('gho_', 'ghu_')} "
              f"{GITHUB_OAUTH.replace('gho_', 'ghr_')} {AWS_STS_ID}", f"xoxp-{SLACK[5:]} xoxoxb-{SLACK[5:]}",
              f"-----BEGIN ENCRYPTED PRIVATE KEY-----\n{PEM_BODY}-----END ENCRYPTED PRIVATE KEY-----"]
_STREAM_ENV = dict(ENV, PGPASSWORD="hunter2hunter2")


def _random_line(rng: random.Random, pem_rate: float, clean_rate: float) -> str:
    roll = rng.random()
    if roll < pem_rate:
        return f"{rng.choice(_WORDS)}\n{PEM}\n{rng.choice(_WORDS)}"
    if roll < 0.02:                                     # longer than the stream's cap, secrets inside
        return " ".join(rng.choice(_WORDS + _LONG_LINE_SECRETS) for _ in range(rng.randint(1000, 15000)))
    if roll < clean_rate:
        return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(0, 20)))
    if roll < (1 + clean_rate) / 2:
        return rng.choice(_NEAR_MISSES) + " " + rng.choice(_WORDS)
    return rng.choice([form for form, _, _ in FORMS] + _MORE_SECRETS + _SPELLINGS)


def _random_stream(rng: random.Random, pem_rate: float, clean_rate: float) -> bytes:
    out = bytearray()
    for _ in range(rng.randint(1, 600)):
        line = _random_line(rng, pem_rate, clean_rate).encode()
        if rng.random() < 0.05:                           # invalid UTF-8 somewhere in the line
            at = rng.randint(0, len(line))
            line = line[:at] + bytes(rng.choice([0x80, 0xc3, 0xe2, 0xed, 0xff]) for _ in range(2)) + line[at:]
        out += line + rng.choice([b"\n", b"\n", b"\n", b"\r\n", b"\n\n"])
    if rng.random() < 0.3:
        out += _random_line(rng, pem_rate, clean_rate).encode()   # a last line with no newline
    return bytes(out)


class _PlainRedactor(Redactor):
    """The reference: every pattern whose anchor is in the text run over all of it (no line or
    offset picked out first)."""
    def _apply(self, s, found, anchors=None, env=True):
        return self._apply_plain(s, found)


@pytest.mark.parametrize("text", _SPELLINGS)
def test_each_spelling_is_redacted_as_by_every_pattern_over_the_whole_text(text):
    fast, plain = Redactor(_STREAM_ENV), _PlainRedactor(_STREAM_ENV)
    out = fast.text(text)
    assert out != text and out == plain.text(text) and fast.counts == plain.counts


def test_letters_folding_to_ascii_are_redacted_as_by_every_pattern_over_the_whole_text():
    # The Kelvin sign lowers to `k` and, like the long s, matches a keyword case-insensitively.
    text = "token=Zq81lmPaWx\nto\u212aen=Xy72kkPaWq and pa\u017f\u017fword=Hunter2-sailboat\n"
    fast, plain = Redactor(_STREAM_ENV), _PlainRedactor(_STREAM_ENV)
    out = fast.text(text)
    assert out == plain.text(text) and fast.counts == plain.counts and fast.count == 3
    assert fast.bytes(text.encode()) == out.encode()


@pytest.mark.parametrize("line", [form for form, _, _ in FORMS] + _MORE_SECRETS + _SPELLINGS)
def test_a_secret_among_many_clean_lines_is_redacted_as_by_every_pattern(line):
    clean = "".join(f"{n} {' '.join(_WORDS)}\n" for n in range(1000)).encode()
    data = clean + f"{line}\r\n".encode() + clean + f"{line}".encode()
    fast, plain = Redactor(_STREAM_ENV), _PlainRedactor(_STREAM_ENV)
    out = fast.bytes(data)
    assert out != data and out == plain.text(data.decode()).encode() and fast.counts == plain.counts


def test_an_environment_value_in_a_mark_put_in_is_redacted_as_by_every_pattern():
    env = {"ODD_TOKEN": "REDACTED:github"}                 # silly, but a value like any other
    data = f"push {GITHUB} now\n".encode() * 3 + b"a clean line\n" * 1000
    fast, plain = Redactor(env), _PlainRedactor(env)
    expected = plain.text(data.decode())
    assert fast.bytes(data) == expected.encode() and fast.counts == plain.counts
    assert fast.counts["env:ODD_TOKEN"] == 3


@pytest.mark.parametrize("seed", range(40))
def test_a_stream_in_random_chunks_gives_the_whole_text_redacted_at_once(seed):
    rng = random.Random(seed)
    # Secrets in most lines, or in a few (then `Redactor.bytes` picks those lines out).
    data = _random_stream(rng, pem_rate=0.02 if seed % 3 == 0 else 0.0, clean_rate=0.97 if seed % 2 else 0.5)
    whole = _PlainRedactor(_STREAM_ENV)
    expected = whole.text(data.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
    assert Redactor(_STREAM_ENV).bytes(data) == expected
    stream = StreamRedactor(Redactor(_STREAM_ENV), cap=4096 if seed % 4 > 1 else redact.STREAM_CAP)
    # 1 byte to 1 MiB, as often small as large
    assert _feed_in_chunks(stream, data, lambda: int(2 ** rng.uniform(0, 20))) == expected
    assert stream.redactor.counts == whole.counts
