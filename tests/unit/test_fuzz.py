"""Fuzzing what a night reads that something else wrote: config files, session.json, and the
agent's event lines (hypothesis). The property: no traceback, ever.

A bad config or state file gives one `ConfigError` line that names the file (and the key, where
there is one), and the CLI prints it as exactly one line on stderr with exit code 78; what the
loaders accept is usable downstream (status renders it, a night can do arithmetic with it). An
event line parses into a well-typed `Event` or is ignored. Every bug these found is pinned as an
@example.
"""
import copy
import dataclasses
import datetime as dt
import json
import math
import os
import tempfile
import typing
import uuid
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from overnight_agent import config, exitcodes, policy, state, status, timeparse
from overnight_agent.agents.base import AttemptView, Event
from overnight_agent.agents.codex import CodexBackend
from overnight_agent.exitcodes import ConfigError

import helpers

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))   # FUZZ_EXAMPLES=20000 for a long hunt
FIXTURES = [HealthCheck.function_scoped_fixture]          # tmp_path: each example rewrites its files
FAST = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=FIXTURES)
CLI = settings(max_examples=3, deadline=None, suppress_health_check=FIXTURES)   # a process per example
LONGEST_MESSAGE = 600   # journald splits lines past LineMax; a message quoting a pasted file must not
NOW = dt.datetime(2026, 12, 1, 23, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))

# --- what the fuzzers draw ---------------------------------------------------------------------

TRICKY = ["", " ", "\x00", "a\x00b", "\n", "a\nb", "\x0c", "\u2028", "\x85", "~", ".", "..", "/", "-x",
          "--help", "**", "a/**x", "[z-a]", "[]]", "0", "-1", "1e400", "0x_", ".inf", "nan", "05:00", "25:00",
          "1h30m", "500ms", "5 parsecs", "200MB", "k=v", "=v", "default", "{repo_name}", "always", "codex",
          "command", "é", "日本", "\ufeff"]
huge = st.sampled_from([("9", 400, ""), ("9", 400, "s"), ("1", 400, "MB"), ("x", 20_000, "")]).map(
    lambda piece: piece[0] * piece[1] + piece[2])
nines = st.integers(-400, 400).map(lambda n: (10 ** abs(n) - 1) * (-1 if n < 0 else 1))   # past float
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), nines, st.floats(), st.text(max_size=20), st.sampled_from(TRICKY),
    huge, st.text(alphabet="0123456789.:smhdkKMGiBb -+e_", max_size=12))   # durations, sizes gone wrong
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)


def one_line(exc: Exception, path) -> str:
    """The error's message, checked: one line (for every line breaker `splitlines` knows), not
    huge, naming the file first."""
    message = str(exc)
    assert message.splitlines() == [message], repr(message[:300])
    assert len(message) <= LONGEST_MESSAGE, repr(message[:300])
    assert message.startswith(f"{path}: "), repr(message[:300])
    return message


def strings_in(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from strings_in(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings_in(key)
            yield from strings_in(item)


def conforms(value, hint) -> bool:
    """Whether `value` is what the type annotation `hint` of a state field says (JSON's view:
    a bool is no int, an int is a float)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return True
    if origin is typing.Union:
        return any(conforms(value, arg) for arg in args)
    if origin in (list, tuple):
        return isinstance(value, origin) and all(conforms(item, args[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict) and all(conforms(k, args[0]) and conforms(v, args[1])
                                               for k, v in value.items())
    if dataclasses.is_dataclass(hint):
        return isinstance(value, hint) and all(conforms(getattr(value, name), field_hint)
                                               for name, field_hint in typing.get_type_hints(hint).items())
    if isinstance(value, bool):
        return hint is bool
    return isinstance(value, (int, float) if hint is float else hint)


# --- config files ---------------------------------------------------------------------------------

SETTINGS = [key for key, _default, _doc in config.describe()]


def durations(cls=config.Config, prefix=""):
    for fld in dataclasses.fields(cls):
        if dataclasses.is_dataclass(fld.type):
            yield from durations(fld.type, f"{prefix}{fld.name}.")
        elif fld.metadata.get("convert") is timeparse.parse_duration:
            yield prefix + fld.name


DURATIONS = set(durations())
SECTIONS = sorted({key.rsplit(".", 1)[0] for key in SETTINGS if "." in key})
# A setting whose bad value the coherence checks report under the key it must agree with.
PARTNERS = {"restart.backoff_initial": "restart.backoff_max", "repo.base_branch": "repo.ops_journal_branch",
            "codex.full_auto": "codex.sandbox", "agent": "command.argv"}
suites = st.lists(st.dictionaries(
    st.sampled_from(config.SUITE_KEYS + ("extra",)),
    values | st.sampled_from(["unit", "pytest -q", "always", ["src/**"], ["[z-a]"], "10m"]), max_size=5),
    max_size=3)


def put(doc: dict, parts, value) -> None:
    for part in parts[:-1]:
        doc = doc.setdefault(part, {})
        if not isinstance(doc, dict):
            return  # a section already of the wrong shape
    doc[parts[-1]] = value


@st.composite
def config_documents(draw):
    """A mapping shaped like the schema, with some settings, sections or keys gone wrong."""
    doc = {"version": draw(st.one_of(st.just(2), st.just(2), values))} if draw(st.integers(0, 9)) else {}
    for key in draw(st.lists(st.sampled_from(SETTINGS), max_size=4)):
        put(doc, key.split("."), draw(suites if key == "validation.suites" else values))
    for section in draw(st.lists(st.sampled_from(SECTIONS), max_size=1)):
        put(doc, section.split("."), draw(values))
    for _ in range(draw(st.integers(0, 1))):
        where = draw(st.sampled_from([""] + SECTIONS))
        put(doc, [*filter(None, where.split(".")), draw(st.text(min_size=1, max_size=10))], draw(values))
    return doc


def yaml_text(doc) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, width=10 ** 6)


yaml_bits = st.sampled_from(list("version: 2\n-[]{}&*!|>'\"%@`#,?\t ") + ["\n  ", "- ", ": ", "!!", "&a ",
                                                                          "*a"])
config_bytes = st.one_of(
    st.binary(max_size=200),
    st.lists(yaml_bits | st.characters(codec="utf-8"), max_size=60).map("".join).map(lambda t: t.encode()),
    st.lists(yaml_bits, max_size=40).map(lambda bits: ("version: 2\n" + "".join(bits)).encode()),
    config_documents().map(yaml_text).map(lambda t: t.encode()),
    config_documents().map(yaml_text).map(lambda t: t.encode("utf-16")),
    config_documents().map(yaml_text).map(lambda t: (t + "# é\n").encode("latin-1", "replace")),
)


def check_config_usable(loaded: config.Loaded) -> None:
    """An accepted config holds what its settings declare, and what a night does with it does
    not raise either."""
    assert conforms(loaded.config, config.Config), loaded.config
    config.resolved_text(loaded)
    config.warnings(loaded)
    for key in SETTINGS:
        value = loaded.config
        for part in key.split("."):
            value = getattr(value, part)
        if isinstance(value, float):
            assert math.isfinite(value), key
        if key in DURATIONS:
            NOW - dt.timedelta(seconds=value), NOW + dt.timedelta(seconds=value)  # night.py, policy.py
    bad = [s for s in strings_in(config.to_plain(loaded.config)) if "\x00" in s]
    assert not bad, f"a NUL reaches paths and argv: {bad[:1]!r}"


def load_config(tmp_path, raw: bytes):
    path = tmp_path / "overnight.yaml"
    path.write_bytes(raw)
    try:
        loaded = config.load(path, tmp_path)
    except ConfigError as exc:
        return path, one_line(exc, path)
    check_config_usable(loaded)
    return path, None


@FAST
@given(raw=config_bytes)
@example(raw=b"version: 2\n# caf\xe9\n")                                       # not UTF-8
@example(raw=b"version: 2\nrepo: " + b"[" * 5000)                              # nested too deeply
@example(raw=b'version: 2\n"a\\nb": 1\n')                                      # a key holding a line break
@example(raw=b'version: 2\n"a\\fb": 1\n')                                      # ... one `splitlines` breaks at
@example(raw=b"version: 2\ncodex:\n  sandbox: " + b"x" * 100_000 + b"\n")     # a huge value quoted
@example(raw=b"version: 2\nschedule:\n  wrap_up: " + b"9" * 400 + b"\n")      # int too large for a float
@example(raw=b'version: 2\nschedule:\n  wrap_up: "' + b"9" * 400 + b's"\n')   # inf seconds
@example(raw=b"version: 2\nschedule:\n  wrap_up: .nan\n")
@example(raw=b"version: 2\nschedule:\n  wrap_up: 99999999999\n")             # past the end of the calendar
@example(raw=b"version: 2\nrestart:\n  backoff_factor: .nan\n")
@example(raw=b"version: 2\nrestart:\n  backoff_factor: " + b"9" * 400 + b"\n")
@example(raw=b'version: 2\nretention:\n  max_log_bytes: "' + b"1" * 400 + b'MB"\n')
@example(raw=b'version: 2\nvalidation:\n  docs_exempt: ["[z-a]"]\n')           # re.error from a glob
@example(raw=b'version: 2\nrepo:\n  run_root: "tmp\\0x"\n')                    # NUL in a path
@example(raw=b'version: 2\ncodex:\n  extra_config: ["a=\\0"]\n')               # NUL in argv
@example(raw=b"version: 2.0\nrepo:\n  run_root: .\n")                          # a float version; `.` a float
@example(raw=b"version: 2\nrepo:\n  reports_dir: 0x_\n")                        # ... `0x_` an int to YAML
@example(raw=b"version: 2\nschedule:\n  wrap_up: !!int 10m\n")                 # a tag PyYAML cannot construct
@example(raw=b'version: 2\ncodex:\n  prompt_template: "boot\\r.md"\n')          # a CR in a path quoted
def test_any_config_file_loads_or_gives_one_line(tmp_path, raw):
    load_config(tmp_path, raw)


def test_config_scalars_that_look_almost_like_numbers_stay_strings():
    cfg = config.parse("version: 2\nrepo:\n  run_root: .\n  reports_dir: 0x_\n  exec_summary_log: -.\n", "x")
    assert (cfg.repo.run_root, cfg.repo.reports_dir, cfg.repo.exec_summary_log) == (".", "0x_", "-.")


@FAST
@given(doc=config_documents())
def test_any_config_document_loads_or_gives_one_line(tmp_path, doc):
    load_config(tmp_path, yaml_text(doc).encode())


@FAST
@given(key=st.sampled_from(SETTINGS), value=values)
def test_a_bad_setting_is_named_in_its_error(tmp_path, key, value):
    doc = {"version": 2}
    put(doc, key.split("."), value)
    path, message = load_config(tmp_path, yaml_text(doc).encode())
    if message is not None:
        named = [key, PARTNERS.get(key, key)]
        assert any(message.startswith(f"{path}: {k}") for k in named), message


@FAST
@given(key=st.sampled_from(["prompts.boot", "prompts.resume", "prompts.wrap_up", "codex.prompt_template",
                            "codex.resume_prompt_template", "codex.wrap_up_prompt_template"]),
       content=st.binary(max_size=100))
@example(key="prompts.boot", content=b"Work until $deadline \xff\n")           # not UTF-8
def test_any_prompt_template_loads_or_gives_one_line(tmp_path, key, content):
    (tmp_path / "boot.md").write_bytes(content)
    section, name = key.split(".")
    load_config(tmp_path, yaml_text({"version": 2, section: {name: "boot.md"}}).encode())


@FAST
@given(value=values)
def test_durations_are_seconds_a_night_can_count_with(value):
    try:
        seconds = timeparse.parse_duration(value)
    except ValueError as exc:
        assert str(exc).splitlines() == [str(exc)]
        return
    assert isinstance(seconds, float) and 0 <= seconds
    NOW - dt.timedelta(seconds=seconds), NOW + dt.timedelta(seconds=seconds)


@FAST
@given(value=values)
def test_numeric_settings_are_finite_or_refused(value):
    for convert in (config._byte_size, config._positive_number, config._fraction, config._positive_int):
        try:
            number = convert(value)
        except ValueError:
            continue
        assert number >= 0 and (type(number) is int or math.isfinite(number)), (convert.__name__, number)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return helpers.make_repo(tmp_path_factory.mktemp("fuzz") / "repo")


def assert_cli_says_one_line(proc, message):
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert proc.returncode == exitcodes.CONFIG, proc.stderr
    assert proc.stderr.splitlines() == [f"overnight-agent: {message}"]


@CLI
@given(raw=config_bytes)
@example(raw=b"version: 2\n# caf\xe9\n")
@example(raw=b"version: 2\nrepo: " + b"[" * 5000)
def test_check_config_prints_one_line_and_exits_78_for_a_bad_file(repo, raw):
    path = repo / "fuzzed.yaml"
    path.write_bytes(raw)
    try:
        config.load(path, repo)
    except ConfigError as exc:
        message = str(exc)
    else:
        assume(False)   # a good file: nothing to see here
    proc = helpers.run_cli("check-config", str(path), "--repo", str(repo))
    assert_cli_says_one_line(proc, message)
    assert message.startswith(f"{path}: ")


# --- session.json ---------------------------------------------------------------------------------

def good_session() -> dict:
    """A session.json as a supervisor writes it mid-night: one ended attempt and one event."""
    session = state.Session(
        run_id="20261201_2300", repo_root="/nonexistent/repo", deadline="2026-12-02T05:00:00+01:00",
        wrap_up_at="2026-12-02T04:30:00+01:00", session_worktree="/nonexistent/w",
        session_branch="overnight/session_20261201_2300", ops_journal_worktree="/nonexistent/ops",
        ops_journal_branch="overnight/ops-journal", base_branch="main", base_commit="0" * 40, agent="codex",
        model="gpt-5.3-codex", model_reasoning_effort="xhigh", sandbox="workspace-write",
        created_at="2026-12-01T23:00:00+01:00", state="backoff",
        thread_id="01a24d11-cd61-77d2-b875-e7bbdbc316d9", tag="oa-x",
        git_identity={"name": "Overnight Agent", "email": "oa@localhost"})
    session.attempts.append(state.Attempt(
        number=1, kind="start", started_at="2026-12-01T23:00:01+01:00", log="/nonexistent/codex_1.log",
        pid=4242, pgid=4242, proc_create_time=1.5, thread_id=session.thread_id,
        ended_at="2026-12-01T23:10:00+01:00", outcome="crashed", detail="exit 1", exit_code=1,
        usage={"input_tokens": 10, "output_tokens": 5}))
    session.note("attempt.ended", "2026-12-01T23:10:00+01:00", outcome="crashed")
    return session.to_dict()


GOOD = good_session()
GOOD_TEXT = json.dumps(GOOD, indent=2)
ATTEMPT_FIELDS = sorted(GOOD["attempts"][0])


@st.composite
def session_documents(draw):
    """A session.json object with some fields missing, retyped or added."""
    data = copy.deepcopy(GOOD)
    for key in draw(st.lists(st.sampled_from(sorted(GOOD)), max_size=3)):
        if draw(st.booleans()):
            data.pop(key, None)
        else:
            data[key] = draw(values)
    attempts = data.get("attempts")
    if isinstance(attempts, list) and attempts and isinstance(attempts[0], dict):
        for key in draw(st.lists(st.sampled_from(ATTEMPT_FIELDS), max_size=3)):
            if draw(st.booleans()):
                attempts[0].pop(key, None)
            else:
                attempts[0][key] = draw(values)
    for key, value in draw(st.dictionaries(st.text(max_size=8), values, max_size=1)).items():
        data.setdefault(key, value)
    return data


session_bytes = st.one_of(
    st.binary(max_size=200),
    st.integers(0, len(GOOD_TEXT)).map(lambda n: GOOD_TEXT[:n].encode()),          # a torn file
    values.map(json.dumps).map(str.encode),                                         # foreign JSON
    session_documents().map(json.dumps).map(str.encode),
    session_documents().map(lambda d: json.dumps(d, ensure_ascii=False).encode("utf-16")),
    session_documents().map(lambda d: json.dumps({**d, "model": "é"}, ensure_ascii=False)
                            .encode("latin-1", "replace")),
)


def check_session_usable(session: state.Session, tmp_path) -> None:
    """An accepted session holds what its fields declare, and what status and a resuming
    supervisor do with it does not raise."""
    assert conforms(session, state.Session), session
    session.repo_root = str(tmp_path / "no-repo")   # status runs git there: never in a real one
    folders = (session.reports_dir, str(Path(session.heartbeat_file).parent.parent))
    # Known, left to status.py: its globs let ENAMETOOLONG through for a folder named past NAME_MAX.
    if not any(len(part.encode()) > 255 for folder in folders for part in Path(folder).parts):
        view = status.collect(tmp_path / "session.json", session=session,
                              codex_home=tmp_path / "codex_home", now=NOW)
        status.render(view)
        status.dumps(view)
    policy.tokens_used(session.attempts)
    session.deadline_dt - session.wrap_up_dt
    copy_path = tmp_path / "saved" / "session.json"
    state.save(copy_path, session)
    assert json.dumps(state.load(copy_path).to_dict()) == json.dumps(session.to_dict())


def load_session(tmp_path, raw: bytes):
    path = tmp_path / "session.json"
    path.write_bytes(raw)
    try:
        session = state.load(path)
    except ConfigError as exc:
        return path, one_line(exc, path)
    if session is not None:
        check_session_usable(session, tmp_path)
    return path, None


BAD_SESSIONS = [
    GOOD_TEXT.replace('"model": "gpt-5.3-codex"', '"model": "caf\xe9"').encode("latin-1"),  # not UTF-8
    b"[" * 100_000,                                                                   # nested too deeply
    json.dumps({**GOOD, "schema": "x" * 100_000}).encode(),                           # a huge value quoted
    json.dumps({**GOOD, "events": {"at": 1}}).encode(),                               # a dict for a list
    json.dumps({**GOOD, "events": [1, None]}).encode(),
    json.dumps({**GOOD, "state": "dancing"}).encode(),
    json.dumps({**GOOD, "restarts": "1"}).encode(),                                   # wrong types
    json.dumps({**GOOD, "supervisor_pid": 10 ** 30}).encode(),
    json.dumps({**GOOD, "git_identity": ["a"]}).encode(),
    json.dumps({**GOOD, "heartbeat_file": "/tmp/x\x00y"}).encode(),                   # NUL in a path
    json.dumps({**GOOD, "run_id": "../../.."}).encode(),                              # gc removes runs/<run_id>
    json.dumps({**GOOD, "run_id": "/home"}).encode(),
    json.dumps({**GOOD, "run_id": "x" * 20_000}).encode(),                            # ENAMETOOLONG in status
    json.dumps({**GOOD, "schema": True}).encode(),                                    # True == 1
    json.dumps({**GOOD, "created_at": "0001-01-01T00:00:00+00:00"}).encode(),         # off the calendar
    json.dumps({**GOOD, "deadline": "9999-12-31T23:59:59-23:59"}).encode(),
    json.dumps({**GOOD, "attempts": [{**GOOD["attempts"][0], "usage": {"input_tokens": "many"}}]}).encode(),
    json.dumps({**GOOD, "attempts": [{**GOOD["attempts"][0], "number": None}]}).encode(),
    json.dumps({**GOOD, "attempts": [{"number": 1}]}).encode(),
]


ODD_TIMES = {**GOOD, "attempts": [{**GOOD["attempts"][0], "started_at": "0001-01-01T00:00:00+14:00",
                                   "ended_at": "9999-12-31T23:59:59-12:00"}],
             "events": [{"event": "x", "at": "9999-12-31T23:59:59-12:00"}]}


@FAST
@given(raw=session_bytes)
@example(raw=GOOD_TEXT.encode())
@example(raw=json.dumps(ODD_TIMES).encode())   # times a reader's zone (or 5 s of slack) moves off the calendar
def test_any_session_file_loads_or_gives_one_line(tmp_path, raw):
    load_session(tmp_path, raw)


@pytest.mark.parametrize("raw", BAD_SESSIONS, ids=range(len(BAD_SESSIONS)))
def test_each_bad_session_found_by_fuzzing_gives_one_line(tmp_path, raw):
    path, message = load_session(tmp_path, raw)
    assert message is not None


@FAST
@given(key=st.sampled_from(sorted(GOOD)), value=values)
def test_a_bad_session_field_is_named_in_its_error(tmp_path, key, value):
    path, message = load_session(tmp_path, json.dumps({**GOOD, key: value}).encode())
    if message is not None:
        assert message.startswith(f"{path}: {key}"), message


@FAST
@given(key=st.sampled_from(ATTEMPT_FIELDS), value=values)
def test_a_bad_attempt_field_is_named_in_its_error(tmp_path, key, value):
    attempt = {**GOOD["attempts"][0], key: value}
    path, message = load_session(tmp_path, json.dumps({**GOOD, "attempts": [attempt]}).encode())
    if message is not None:
        assert message.startswith(f"{path}: attempts[0].{key}"), message


@CLI
@given(raw=session_bytes)
@example(raw=BAD_SESSIONS[0])
@example(raw=BAD_SESSIONS[1])
def test_status_prints_one_line_and_exits_78_for_a_bad_session_file(repo, raw):
    path = config.load(None, repo).paths.session_state
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    try:
        state.load(path)
    except ConfigError as exc:
        message = str(exc)
    else:
        assume(False)
    for args in ((), ("--json",)):
        proc = helpers.run_cli("status", "--repo", str(repo), *args)
        assert_cli_says_one_line(proc, message)
        assert message.startswith(f"{path}: ")


@pytest.mark.parametrize("raw", [BAD_SESSIONS[0], BAD_SESSIONS[9]], ids=["not-utf8", "run-id-escapes"])
def test_run_refuses_a_bad_session_file_in_one_line_and_keeps_it(night, raw):
    path = night.run_root / "session.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(raw)
    with pytest.raises(ConfigError) as info:
        state.load(path)
    proc = helpers.run_cli("run", "--repo", str(night.repo), "--config", str(night.config), "--hours", "1",
                           mark=night.mark)
    assert_cli_says_one_line(proc, str(info.value))
    assert path.read_bytes() == raw


# --- agent event lines ----------------------------------------------------------------------------

KINDS = {"thread_started", "turn_started", "item", "turn_completed", "turn_failed", "error", "other"}
TYPES = ["thread.started", "turn.started", "turn.completed", "turn.failed", "error", "item.started",
         "item.updated", "item.completed"]


@st.composite
def event_objects(draw):
    """A JSON object like a codex event, with fields of any type."""
    obj = draw(st.dictionaries(st.sampled_from(["thread_id", "usage", "error", "message", "item"])
                               | st.text(max_size=6), values, max_size=4))
    obj["type"] = draw(st.sampled_from(TYPES) | values)
    if draw(st.booleans()):
        obj["item"] = draw(st.dictionaries(st.sampled_from(["type", "message", "id", "command"]),
                                           values | st.just("command_execution"), max_size=3))
    if draw(st.booleans()):
        obj["usage"] = draw(st.dictionaries(st.sampled_from(list(status.USAGE_KEYS)) | st.text(max_size=4),
                                            values, max_size=3))
    if draw(st.booleans()):
        obj["error"] = {"message": draw(values)}
    return obj


SPECIAL_LINES = {"deep": "[" * 100_000, "deep message": '{"type":"error","message":' + "[" * 5_000,
                 "huge": '{"type":"error","message":"' + "x" * 1_000_000 + '"}', "empty": "", "cr": "\r",
                 "null": "null"}
event_lines = st.one_of(
    event_objects().map(json.dumps), st.text(max_size=80), values.map(json.dumps),
    st.binary(max_size=80).map(lambda b: b.decode("utf-8", "replace")),   # how the supervisor reads stdout
    st.sampled_from(sorted(SPECIAL_LINES)).map(SPECIAL_LINES.get))


def backend(tmp_path) -> CodexBackend:
    (tmp_path / "codex_home" / "sessions").mkdir(parents=True, exist_ok=True)
    return CodexBackend(codex_bin="codex", codex_home=tmp_path / "codex_home", model="m", effort="xhigh",
                        sandbox="workspace-write")


def check_event(event) -> None:
    assert isinstance(event, Event) and event.kind in KINDS, event
    for text in (event.thread_id, event.message, event.item_type, event.phase):
        assert text is None or isinstance(text, str), event
    assert event.usage is None or all(isinstance(k, str) and type(v) is int for k, v in event.usage.items())
    if event.thread_id is not None:
        assert event.thread_id and not event.thread_id.startswith("-") and "\x00" not in event.thread_id


@FAST
@given(lines=st.lists(event_lines, max_size=6))
@example(lines=[SPECIAL_LINES["deep"]])                                               # RecursionError
@example(lines=['{"type":"thread.started","thread_id":{"a":1}}'])                      # a dict for an id
@example(lines=['{"type":"thread.started","thread_id":"**"}'])                         # breaks rglob
@example(lines=['{"type":"thread.started","thread_id":"--help"}'])                     # an option to codex
@example(lines=['{"type":"turn.completed","usage":{"input_tokens":"many"}}'])          # breaks the budget
@example(lines=['{"type":"turn.completed","usage":{"input_tokens":1e400}}'])
@example(lines=['{"type":"item.started","item":{"type":["command_execution"],"message":5}}'])
def test_event_lines_parse_into_events_or_are_ignored(tmp_path, lines):
    b = backend(tmp_path)
    view = AttemptView(kind="resume", expected_thread="t", returncode=1, stderr_tail="boom\n")
    for line in lines:
        event = b.parse_line(line)
        if event is not None:
            check_event(event)
            view.observe(event)
    b.classify(view)
    # what the supervisor keeps of them: the thread (resumed, looked up) and the usage (the budget)
    if view.thread_id:
        b.resume_argv(view.thread_id, "go on")
        b.progress_files(view.thread_id)
    attempt = state.Attempt(number=1, kind="resume", started_at="2026-12-01T23:00:01+01:00", log="/l",
                            thread_id=view.thread_id, usage=view.usage)
    policy.tokens_used([attempt])
    status.usage_deltas([attempt])
    path = tmp_path / "session.json"
    session = state.from_dict(GOOD, "good")
    session.thread_id, session.attempts = view.thread_id, [attempt]
    state.save(path, session)
    assert state.load(path) == session


LINES_CODEX = """#!/bin/sh
cat '{lines}'
"""
SPEND_THE_BUDGET = '{"type":"turn.completed","usage":{"input_tokens":1000000,"output_tokens":1}}'


@CLI
@given(lines=st.lists(event_lines, min_size=1, max_size=20))
@example(lines=[SPECIAL_LINES["deep"], '{"type":"thread.started","thread_id":"**"}',
                '{"type":"turn.completed","usage":{"input_tokens":"many"}}'])
def test_a_real_night_reads_fuzzed_event_lines_without_a_traceback(lines):
    """`run` with a codex that prints the lines and then a turn that spends the token budget:
    the night finishes (exit 0) whatever came before, and nothing anywhere says Traceback."""
    b = CodexBackend(codex_bin="codex", codex_home=Path("/nonexistent"), model="m", effort="e", sandbox="s")
    pieces = "\n".join(lines).split("\n")   # the supervisor splits at \n only
    assume(not any((b.parse_line(piece) or Event("other")).kind == "turn_failed" for piece in pieces))
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        repo = helpers.make_repo(base / "repo")
        (base / "lines.jsonl").write_text("\n".join([*lines, SPEND_THE_BUDGET]) + "\n", encoding="utf-8")
        codex = base / "bin" / "codex-lines"
        codex.parent.mkdir()
        codex.write_text(LINES_CODEX.format(lines=base / "lines.jsonl"))
        codex.chmod(0o755)
        cfg = helpers.write_config(base / "overnight.yaml", base, codex={"codex_bin": str(codex)},
                                   budget={"max_tokens": 1})
        mark = uuid.uuid4().hex
        code, out, err = helpers.finish(helpers.start_run(repo, cfg, mark, "--hours", "1"), timeout=40)
        helpers.assert_no_agent_processes(mark, helpers.tag_prefix(base / "run"))
        session = helpers.read_session(base)
        logs = "".join(p.read_text(errors="replace") for p in (base / "run").rglob("supervisor.log"))
    assert "Traceback" not in out + err + logs, err[-3000:]
    assert code == 0, err[-3000:]
    assert session["state"] == "finished" and "token budget spent" in session["events"][-1]["reason"]
