"""The numbers a night's loop runs by, made from the config in one place.

Owns: `Settings` (grace periods, restart budgets, liveness limits, log limits, as plain numbers)
and `from_config`. Must not: read files, touch the clock or decide anything: the supervisor,
`policy` and `liveness` do, with these numbers.
"""
from dataclasses import dataclass

from . import policy
from .liveness import Limits, sample_every


@dataclass
class Settings:
    """What the loop needs from the config, as plain numbers."""

    sigint_grace: float
    sigterm_grace: float
    kill_grace: float
    budgets: policy.Budgets
    limits: Limits
    sample_interval: float
    network_down_limit: float
    resume_failures_before_fresh: int
    redact_output: bool = True
    max_log_bytes: int = 200 * 1000 * 1000
    tick: float = 0.2


def from_config(cfg) -> Settings:
    """The loop's numbers from a loaded config (`config.Config`)."""
    restart, stop, live = cfg.restart, cfg.stop, cfg.liveness
    limits = Limits(model_silent=live.model_silent, command_silent=live.command_silent,
                    agent_cpu_floor=live.agent_cpu_floor, agent_cpu_ceiling=live.agent_cpu_ceiling,
                    command_cpu_floor=live.command_cpu_floor)
    return Settings(
        sigint_grace=stop.sigint_grace, sigterm_grace=stop.sigterm_grace, kill_grace=2.0,
        budgets=policy.Budgets(
            initial=restart.backoff_initial, factor=restart.backoff_factor, maximum=restart.backoff_max,
            healthy_after=restart.healthy_after, max_per_hour=restart.max_per_hour,
            rate_limit_backoff=restart.rate_limit_backoff, usage_limit_margin=restart.usage_limit_margin,
            max_tokens=cfg.budget.max_tokens),
        limits=limits, sample_interval=sample_every(limits, live.sample_interval),
        network_down_limit=live.network_down_limit,
        resume_failures_before_fresh=restart.resume_failures_before_fresh,
        redact_output=cfg.logs.redact_agent_output, max_log_bytes=cfg.retention.max_log_bytes)
