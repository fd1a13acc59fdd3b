"""The stand-in's model: a scenario file of invocations, each a list of steps, and codex's texts
for what a model can do wrong (a usage limit and when it resets).

Owns: the step kinds and their checks (`ScenarioError` names the invocation, the step and the
key), finding the scenario (`$FAKE_CODEX_SCENARIO`, or `fake_codex_scenario.yaml` in
CODEX_HOME, else a built-in one), and the usage-limit wording (measured). Must not: run steps
(the command line plays them) or touch CODEX_HOME.
"""
import datetime as dt
import json
from collections import namedtuple
from typing import Any, Dict, Optional

from . import common
from .store import USAGE_KEYS

DEFAULT_TURN_USAGE = {"input_tokens": 200, "output_tokens": 40}

MSG_USAGE_LIMIT_AT = ("You\u2019ve hit your usage limit. Visit https://chatgpt.com/settings/usage "
                      "to purchase more credits or try again at {when}.")
MSG_USAGE_LIMIT_LATER = ("You\u2019ve hit your usage limit. Upgrade to Pro "
                         "(https://chatgpt.com/explore/pro), visit "
                         "https://chatgpt.com/settings/usage to purchase more credits or try "
                         "again later.")

DEFAULT_SCENARIO = {"invocations": [{"steps": [
    {"message": "Looking at the work tree."},
    {"shell": "git status --short"},
    {"message": "Done: nothing else to do."},
]}]}




# ----------------------------------------------------------------------------- scenario

class ScenarioError(Exception):
    pass


Step = namedtuple("Step", "kind value options")


def _as_text(value):
    return "" if value is None else str(value)


def _as_number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError("expected a non-negative number")
    return float(value)


def _as_exit_code(value):
    if isinstance(value, bool):
        return 1 if value else 0
    if not isinstance(value, int) or not 0 <= value <= 255:
        raise ValueError("expected an exit code 0-255")
    return value


def _as_usage(value):
    if not isinstance(value, dict):
        raise ValueError("expected a mapping such as {input: 100, output: 20}")
    usage = {}
    for key, count in value.items():
        name = key if str(key).endswith("_tokens") else f"{key}_tokens"
        if name not in USAGE_KEYS or isinstance(count, bool) or not isinstance(count, int):
            raise ValueError(f"bad usage entry {key!r}: keys are input, cached_input, "
                             "cache_write_input, output, reasoning_output; values integers")
        usage[name] = count
    return usage


def _as_fail(value):
    if isinstance(value, dict):  # {message: ..., retries: N} form
        return _as_text(value.get("message")), {k: v for k, v in value.items() if k != "message"}
    return _as_text(value), {}


def _as_usage_limit(value):
    if value is None or isinstance(value, str):
        return value
    return _as_number(value)


def _as_write_file(value):
    if not isinstance(value, dict) or not value.get("path"):
        raise ValueError("expected {path: ..., text: ...}")
    return {"path": str(value["path"]), "text": _as_text(value.get("text")),
            "append": bool(value.get("append", False))}


def _as_flag(value):
    return bool(value)


def _as_interval(value):
    return 2.0 if isinstance(value, bool) else _as_number(value)


# step kind -> (value converter, extra keys allowed beside the kind)
STEP_KINDS = {
    "reasoning": (_as_text, ()),
    "message": (_as_text, ()),
    "shell": (_as_text, ("yield_after",)),
    "sleep": (_as_number, ()),
    "usage": (_as_usage, ()),
    "crash": (_as_exit_code, ()),
    "exit_early": (_as_flag, ()),
    "fail": (_as_fail, ("retries", "retry_delay")),
    "usage_limit": (_as_usage_limit, ()),
    "network_down": (_as_interval, ()),
    "hang": (_as_flag, ()),
    "ignore_sigterm": (_as_flag, ()),
    "spawn_setsid_grandchild": (_as_number, ()),
    "write_file": (_as_write_file, ()),
    "leave_registry_lock": (_as_flag, ()),   # gemini only: exit with projects.json.lock taken
}
_STEP_OPTIONS = {"yield_after": _as_number, "retries": int, "retry_delay": _as_number}


def _parse_step(raw: Any, where: str) -> Step:
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: a step is a mapping such as {{message: 'text'}}")
    kinds = [key for key in raw if key in STEP_KINDS]
    if len(kinds) != 1:
        raise ScenarioError(f"{where}: exactly one of {', '.join(STEP_KINDS)} is needed, "
                            f"got {sorted(map(str, raw))}")
    kind = kinds[0]
    convert, allowed = STEP_KINDS[kind]
    extra = {key: value for key, value in raw.items() if key != kind}
    try:
        value = convert(raw[kind])
        if kind == "fail":
            value, nested = value
            extra = {**nested, **extra}
        unknown = set(extra) - set(allowed)
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)} (allowed: {list(allowed)})")
        options = {key: _STEP_OPTIONS[key](val) for key, val in extra.items()}
    except (TypeError, ValueError) as exc:
        raise ScenarioError(f"{where}.{kind}: {exc}") from None
    return Step(kind, value, options)


def parse_scenario(doc: Any) -> Dict[str, Any]:
    """Validate a scenario document -> {model_metadata_warning, invocations: [[Step]]}."""
    if not isinstance(doc, dict):
        raise ScenarioError("the document must be a mapping with `invocations`")
    raw_invocations = doc.get("invocations")
    if raw_invocations is None and "steps" in doc:  # one-turn shorthand
        raw_invocations = [{"steps": doc["steps"]}]
    if not isinstance(raw_invocations, list) or not raw_invocations:
        raise ScenarioError("`invocations` must be a non-empty list")
    invocations = []
    for number, invocation in enumerate(raw_invocations):
        steps = invocation.get("steps") if isinstance(invocation, dict) else None
        if not isinstance(steps, list):
            raise ScenarioError(f"invocations[{number}]: needs a `steps` list")
        invocations.append([_parse_step(step, f"invocations[{number}].steps[{index}]")
                            for index, step in enumerate(steps)])
    return {"model_metadata_warning": bool(doc.get("model_metadata_warning", True)),
            "invocations": invocations}


def scenario_path(home: str) -> Optional[str]:
    """`$FAKE_CODEX_SCENARIO`, else `fake_codex_scenario.yaml` in CODEX_HOME."""
    return common.scenario_path(home, "codex")


def load_scenario(path: Optional[str]) -> Dict[str, Any]:
    if path is None:
        return parse_scenario(DEFAULT_SCENARIO)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ScenarioError(f"cannot read it: {exc.strerror}") from None
    try:
        import yaml
        doc = yaml.safe_load(text)
    except ImportError:  # pragma: no cover - PyYAML is a dependency
        doc = json.loads(text)
    except Exception as exc:  # yaml.YAMLError and friends
        raise ScenarioError(f"not YAML/JSON: {exc}") from None
    return parse_scenario(doc)


# ----------------------------------------------------------------------------- usage-limit text

_MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


def _day_suffix(day: int) -> str:
    if 11 <= day % 100 <= 13:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


def format_reset_time(reset: dt.datetime, now: dt.datetime) -> str:
    """codex's wording of a reset moment (local time, cut to the minute): `1:57 AM` when it is
    today, `Sep 11th, 2026 12:26 AM` on another day."""
    clock = f"{reset.hour % 12 or 12}:{reset.minute:02d} {'AM' if reset.hour < 12 else 'PM'}"
    if reset.date() == now.date():
        return clock
    return f"{_MONTHS[reset.month - 1]} {reset.day}{_day_suffix(reset.day)}, {reset.year} {clock}"


def usage_limit_message(value: Any, now: Optional[dt.datetime] = None) -> str:
    """None -> 'try again later.'; a string -> that time verbatim; seconds -> now + seconds."""
    if value is None:
        return MSG_USAGE_LIMIT_LATER
    if isinstance(value, str):
        return MSG_USAGE_LIMIT_AT.format(when=value)
    now = now or dt.datetime.now().astimezone()
    return MSG_USAGE_LIMIT_AT.format(when=format_reset_time(now + dt.timedelta(seconds=value), now))


