# overnight-agent: `make demo` and `make test` work from a clean clone (they build .venv first).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv demo test test-fast test-unit lint bench chaos clean docs

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/overnight-agent demo

# The real Codex CLI (pinned, tests/setup_codex.sh) is installed after collection, before the
# first test that needs it (tests/conftest.py), never inside a test's time limit.
test: $(STAMP) lint
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not realcodex and not realclaude and not realgemini"

# Pure code only (policies, parsing, the supervisor's tick replayed with fakes): seconds.
test-unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

# pyflakes, pinned in the test extra: unused imports and names, undefined names.
lint: $(STAMP)
	$(PY) -m pyflakes overnight_agent tests bench/*.py

# Hundreds of injected faults against the real supervisor, git and the scripted agent; writes
# docs/reliability.md from the run (about 10 minutes; `make test` runs a short campaign).
chaos: $(STAMP)
	$(PY) tests/chaos.py --faults 240 --jobs 4 --write docs/reliability.md

# Side by side with supervisord and circus (built into bench/.venv) and a stdlib reference;
# not part of the tests; about 10 minutes; writes bench/results.md. See docs/benchmarks.md.
bench: $(STAMP)
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .cache

# Regenerate the key table of docs/configuration.md from the schema, and the transition table
# of docs/how-it-works.md from state.py (tests check both).
docs: $(STAMP)
	$(PY) -c "from pathlib import Path; from overnight_agent import config; p = Path('docs/configuration.md'); s = p.read_text(); p.write_text(s[:s.index('## Every key')] + '## Every key\n\n' + config.reference_table())"
	$(PY) -c "from pathlib import Path; from overnight_agent import state; p = Path('docs/how-it-works.md'); s = p.read_text(); a = s.index('<!-- transitions'); a = s.index('\n', a) + 1; b = s.index('<!-- end of transitions'); p.write_text(s[:a] + state.transition_table() + s[b:])"
