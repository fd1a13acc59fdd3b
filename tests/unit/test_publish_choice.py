"""The publish step's pure decisions: which refs a night pushes, what git answered, what is shown."""
import pytest

from overnight_agent import config, publish
from overnight_agent.exitcodes import ConfigError

RUN = "20261206_190000_3fa9c1"
SESSION = f"overnight/session_{RUN}"
JOURNAL = "overnight/ops-journal"


def choose(local, recorded=(), pattern="overnight/*", journal=JOURNAL):
    return publish.choose(local, session_branch=SESSION, ops_journal_branch=journal, run_id=RUN,
                          recorded=recorded, pattern=pattern)


def test_the_session_branch_work_branches_and_journal_go_and_nothing_else():
    local = ["main", "release", "feature/operator", SESSION, JOURNAL, "overnight/fix-parser",
             "overnight/session_20261205_190000_aaaaaa", "overnight/old-item", f"overnight/checkpoint_{RUN}"]
    choice = choose(local, recorded=[SESSION, "overnight/fix-parser"])
    assert choice.push == [SESSION, f"overnight/checkpoint_{RUN}", "overnight/fix-parser", JOURNAL]
    assert choice.skipped == {"overnight/old-item": "not made by this night",
                              "overnight/session_20261205_190000_aaaaaa": "not made by this night"}


def test_a_recorded_name_outside_overnight_is_never_pushed():
    # The branches file lies in a folder the agent can write: it cannot widen what is pushed.
    assert choose(["main", SESSION, "release"], recorded=["main", "release"]).push == [SESSION]


def test_a_branch_there_before_the_night_stays_local_whatever_the_file_says():
    local = [SESSION, JOURNAL, "overnight/old-item", "overnight/fix-parser"]
    choice = publish.choose(local, session_branch=SESSION, ops_journal_branch=JOURNAL, run_id=RUN,
                            recorded=[SESSION, "overnight/old-item", "overnight/fix-parser"],
                            existed=["overnight/old-item", JOURNAL])
    assert choice.push == [SESSION, "overnight/fix-parser", JOURNAL]
    assert choice.skipped == {"overnight/old-item": "there before this night began"}
    # A session.json of an older version has no snapshot: the file alone decides, as before.
    assert choose(local, recorded=["overnight/old-item"]).push == [SESSION, "overnight/old-item", JOURNAL]


def test_the_pattern_narrows_the_work_branches_but_not_the_journal():
    local = [SESSION, JOURNAL, "overnight/fix-a", "overnight/deep/fix-b"]
    choice = choose(local, recorded=["overnight/fix-a", "overnight/deep/fix-b"], pattern="overnight/session_*")
    assert choice.push == [SESSION, JOURNAL]
    assert set(choice.skipped) == {"overnight/fix-a", "overnight/deep/fix-b"}
    # `*` stays inside one folder; `**` crosses them.
    assert choose(local, recorded=["overnight/deep/fix-b"]).push == [SESSION, JOURNAL]
    assert choose(local, recorded=["overnight/deep/fix-b"], pattern="overnight/**").push == [
        SESSION, "overnight/deep/fix-b", JOURNAL]


def test_a_journal_branch_of_another_name_still_goes_and_a_missing_one_does_not():
    assert choose([SESSION, "ops/journal"], journal="ops/journal").push == [SESSION, "ops/journal"]
    assert choose([SESSION]).push == [SESSION]


PORCELAIN = (
    "To /srv/git/project.git\n"
    f"*\trefs/heads/{SESSION}:refs/heads/{SESSION}\t[new branch]\n"
    f" \trefs/heads/{JOURNAL}:refs/heads/{JOURNAL}\t1111111..2222222\n"
    "=\trefs/heads/overnight/same:refs/heads/overnight/same\t[up to date]\n"
    "!\trefs/heads/overnight/fix:refs/heads/overnight/fix\t[rejected] (fetch first)\n"
    "Done\n")


def test_porcelain_is_read_per_branch():
    assert publish.parse_porcelain(PORCELAIN) == {
        SESSION: ("*", "[new branch]"), JOURNAL: (" ", "1111111..2222222"),
        "overnight/same": ("=", "[up to date]"), "overnight/fix": ("!", "[rejected] (fetch first)")}


def test_a_rejected_branch_is_reported_and_the_rest_counted():
    branches = [SESSION, JOURNAL, "overnight/same", "overnight/fix"]
    outcome = publish._interpret("origin", branches, 1, PORCELAIN, "error: failed to push some refs\n", [])
    assert outcome.pushed == [SESSION, JOURNAL] and outcome.unchanged == ["overnight/same"]
    assert outcome.rejected == {"overnight/fix": "[rejected] (fetch first)"}
    assert outcome.error is None and not outcome.ok


def test_a_push_that_reached_nothing_is_one_error_without_credentials():
    url = "https://bot:ghp_abcdefghijklmnopqrstuvwxyz0123456789@git.example.com/p.git"
    stderr = f"fatal: unable to access '{url}': Could not resolve host: git.example.com\n"
    outcome = publish._interpret("https://***@git.example.com/p.git", [SESSION], 128, "", stderr, [url])
    assert outcome.error == ("fatal: unable to access 'https://***@git.example.com/p.git': "
                             "Could not resolve host: git.example.com")
    assert "ghp_" not in str(outcome.fields())


@pytest.mark.parametrize("text,shown", [
    ("https://user:pass@host/r.git", "https://***@host/r.git"),
    ("https://x-access-token:tok@github.com/o/r", "https://***@github.com/o/r"),
    ("https://tokenonly@host/r", "https://***@host/r"),
    ("git@github.com:o/r.git", "git@github.com:o/r.git"),          # an ssh user is no secret
    ("/srv/git/r.git", "/srv/git/r.git"),
    ("said 'ssh://me:pw@h:22/r' twice: ssh://me:pw@h:22/r", "said 'ssh://***@h:22/r' twice: ssh://***@h:22/r"),
])
def test_credentials_are_hidden(text, shown):
    assert publish.hide_credentials(text) == shown


def test_status_line_names_the_outcome():
    class S:
        events = []
    assert publish.describe(S) is None
    S.events = [{"event": publish.PUSHED, "remote": "origin", "pushed": ["a", "b"], "unchanged": []}]
    assert publish.describe(S) == "published to origin: 2 pushed, 0 already there"
    assert not publish.pending(S)
    S.events.append({"event": publish.FAILED, "remote": "origin", "pushed": ["a"], "unchanged": [],
                     "rejected": {"b": "[rejected] (fetch first)"}})
    assert publish.describe(S) == ("publish to origin FAILED: b refused ([rejected] (fetch first)) "
                                   "(1 pushed, 0 already there)")


def test_config_defaults_and_refusals():
    cfg = config.parse("version: 2\n", "x")
    assert (cfg.publish.enabled, cfg.publish.remote, cfg.publish.branches) == (False, None, "overnight/*")
    on = config.parse("version: 2\npublish: {enabled: true, remote: origin, timeout: 30s}\n", "x")
    assert on.publish.timeout == 30.0
    for text, key in [("{enabled: true}", "publish.remote: missing"),
                      ("{branches: 'release/*'}", "publish.branches: 'release/*' lies outside overnight/"),
                      ("{remote: '--upload-pack=x'}", "publish.remote:"),
                      ("{enabled: yes-please}", "publish.enabled:")]:
        with pytest.raises(ConfigError, match=key.replace("*", r"\*")):
            config.parse(f"version: 2\npublish: {text}\n", "x")
