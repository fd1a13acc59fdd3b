"""Converters for durations and clock times, and the pure arithmetic of a night.

Owns: parsing `30s`/`10m`/`1h30m`/`HH:MM`, computing deadlines, wrap-up times and night
windows from a given `now`, and showing recorded times to a reader (local clock, durations);
`local_now`, the one reading of the wall clock (a fault-injection test may move it). Must not:
read the clock anywhere else (the arithmetic takes `now`), or touch files.
Every converter raises ValueError whose text says what was expected.
"""
import datetime as dt
import re
from typing import Optional

from . import faults

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_HINT = "a duration like 45s, 10m, 1h30m or a number of seconds"
LONGEST_DURATION = 365 * 86400.0   # longer is a typo, and soon past what a date can be moved by


def parse_duration(value) -> float:
    """Seconds in `value`: a non-negative number, or units like 1h30m, 10m, 2.5s, 500ms; at most a year."""
    if isinstance(value, bool):
        raise ValueError(f"expected {DURATION_HINT}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"expected {DURATION_HINT}, not a negative number")
        return _at_most_a_year(value, value)
    if not isinstance(value, str):
        raise ValueError(f"expected {DURATION_HINT}")
    text = value.strip().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return _at_most_a_year(float(text), value)
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"{value!r} is not {DURATION_HINT}")
    return _at_most_a_year(total, value)


def _at_most_a_year(seconds, value) -> float:
    """`seconds` as a float, refused when NaN, infinite (400 digits) or longer than a year: a night
    adds durations to dates, and `.inf` or `1e12` seconds would crash it there."""
    if not 0 <= seconds <= LONGEST_DURATION:
        raise ValueError(f"{value!r} is not {DURATION_HINT} of at most 365d")
    return float(seconds)


def parse_clock(value) -> dt.time:
    """A local wall-clock time written HH:MM (24-hour)."""
    if not isinstance(value, str) or not re.fullmatch(r"\d{1,2}:\d{2}", value.strip()):
        raise ValueError(f"{value!r} is not a time of day; expected HH:MM, e.g. 05:00")
    hours, minutes = (int(part) for part in value.strip().split(":"))
    if hours > 23 or minutes > 59:
        raise ValueError(f"{value!r} is not a time of day; expected HH:MM between 00:00 and 23:59")
    return dt.time(hours, minutes)


def format_duration(seconds: float) -> str:
    seconds = int(round(max(seconds, 0)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def next_occurrence(now: dt.datetime, at: dt.time) -> dt.datetime:
    """The first local time `at` strictly after `now` (`now` must be timezone-aware)."""
    candidate = now.replace(hour=at.hour, minute=at.minute, second=0, microsecond=0)
    if candidate <= now:
        candidate = _localize(candidate.replace(tzinfo=None) + dt.timedelta(days=1))
    return candidate


def in_night_window(now: dt.datetime, start: dt.time, end: dt.time) -> bool:
    """True when local `now` lies in [start, end), a window that may wrap past midnight."""
    t = now.time().replace(tzinfo=None)
    if start <= end:
        return start <= t < end
    return t >= start or t < end


def local_now() -> dt.datetime:
    now = dt.datetime.now().astimezone()
    skew = faults.clock_skew()   # 0 outside the fault-injection tests
    return now + dt.timedelta(seconds=skew) if skew else now


def _localize(naive: dt.datetime) -> dt.datetime:
    """Attach the local UTC offset in force at `naive` (DST-correct for the local zone)."""
    return naive.astimezone()


def iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="seconds")


def parse_iso(value: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no UTC offset")
    return moment


# --- showing recorded times (status, the report) ------------------------------------------------

def moment(value) -> Optional[dt.datetime]:
    """A recorded time (ISO 8601 with an offset, or a `Z`), or None when there is none."""
    if isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str) or not value:
        return None
    try:
        when = parse_iso(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if 1 < when.year < 9999 else None  # else another zone's clock is off the calendar


def local_clock(value, fmt: str = "%H:%M:%S", missing: str = "–") -> str:
    """A recorded time on this machine's clock, e.g. `23:04:17`."""
    when = moment(value)
    if when is None:
        return missing
    return when.astimezone(local_now().tzinfo).strftime(fmt)


def span(start, end, missing: str = "–") -> str:
    """How long from `start` to `end` (recorded times), e.g. `1h05m`."""
    a, b = moment(start), moment(end)
    if a is None or b is None:
        return missing
    return format_duration((b - a).total_seconds())
