"""The short fault-injection campaign (`make chaos` runs the long one and writes
docs/reliability.md): a sample of every kind of fault, each checked as tests/chaos.py says."""
import os
import random
import shutil

import chaos

FAULTS = 24   # every bad state of the world, a flood, a full disk, and a sample of kills


def test_a_short_campaign_survives_every_fault(tmp_path):
    seed = int(os.environ.get("CHAOS_SEED") or random.randrange(1 << 30))
    results = chaos.campaign(FAULTS, jobs=4, seed=seed, root=tmp_path, progress=lambda line: None)
    figures = chaos.figures(results)
    failed = [f"{r.family}: {r.fault}: {'; '.join(r.problems)}" for r in results if r.injected and not r.survived]
    assert not failed, f"CHAOS_SEED={seed}:\n" + "\n".join(failed)
    assert figures["injected"] >= FAULTS - 4, f"CHAOS_SEED={seed}: only {figures['injected']} faults reached"
    assert (figures["lines_lost"], figures["torn"], figures["corrupted"], figures["orphans"],
            figures["two_agents"]) == (0, 0, 0, 0, 0)
    shutil.rmtree(tmp_path, ignore_errors=True)
