"""A small Kustomize renderer for the tests: exactly the features deploy/kubernetes/ uses.

`kubectl kustomize` is not on the machines that run the tests, so the overlays are rendered here,
in Kustomize's order (resources, then patches, then the name suffix or prefix with the references
to renamed objects, labels, images). Supported: `resources` (files and directories holding a
kustomization), `namePrefix`/`nameSuffix`, `labels` (pairs, includeTemplates for CronJobs),
`patches` (a `path` to a strategic-merge patch naming its target by kind and name; lists merged
by Kubernetes' merge keys for the fields patched here), `images` (name, newName, newTag). Any
other key, or a patch directive (`$patch`), is refused: a feature used in deploy/ but not rendered
here fails the tests instead of passing unchecked.
"""
import copy
from pathlib import Path
from typing import Dict, List, Tuple

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namePrefix", "nameSuffix", "labels", "patches", "images"}
# Kubernetes' patchMergeKey for the lists a patch here may touch; any other list is replaced.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath"}
# Where a pod spec names another object: (field holding the reference, its name key, kind named).
REFERENCES = (("configMap", "name", "ConfigMap"), ("configMapKeyRef", "name", "ConfigMap"),
              ("configMapRef", "name", "ConfigMap"), ("persistentVolumeClaim", "claimName", "PersistentVolumeClaim"),
              ("secret", "secretName", "Secret"), ("secretKeyRef", "name", "Secret"), ("secretRef", "name", "Secret"))
TEMPLATE_LABELS = {"CronJob": (("spec", "jobTemplate", "metadata"), ("spec", "jobTemplate", "spec", "template", "metadata"))}


class Unsupported(ValueError):
    pass


def build(folder: Path) -> List[dict]:
    folder = Path(folder)
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise Unsupported(f"{folder}/kustomization.yaml: {sorted(unknown)} not rendered by tests/kustomize_lite.py")
    objects: List[dict] = []
    for entry in kustomization.get("resources", []):
        path = folder / entry
        if path.is_dir():
            objects += build(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for patch_entry in kustomization.get("patches", []):
        if set(patch_entry) != {"path"}:
            raise Unsupported(f"{folder}: patches: only `path:` entries are rendered, not {sorted(patch_entry)}")
        patch = yaml.safe_load((folder / patch_entry["path"]).read_text())
        target = (patch["kind"], patch["metadata"]["name"])
        index = next((i for i, o in enumerate(objects) if (o["kind"], o["metadata"]["name"]) == target), None)
        if index is None:
            raise Unsupported(f"{folder}/{patch_entry['path']}: no {target[0]} {target[1]} to patch")
        objects[index] = merge(objects[index], patch)
    prefix, suffix = kustomization.get("namePrefix", ""), kustomization.get("nameSuffix", "")
    if prefix or suffix:
        renamed: Dict[Tuple[str, str], str] = {key: f"{prefix}{key[1]}{suffix}" for key in names}
        for obj in objects:
            obj["metadata"]["name"] = renamed[(obj["kind"], obj["metadata"]["name"])]
            _rename_references(obj.get("spec"), renamed)
    for entry in kustomization.get("labels", []):
        if set(entry) - {"pairs", "includeTemplates"}:
            raise Unsupported(f"{folder}: labels: only pairs and includeTemplates are rendered")
        for obj in objects:
            places = [("metadata",)]
            if entry.get("includeTemplates"):
                if obj["kind"] not in TEMPLATE_LABELS and obj["kind"] not in ("ConfigMap", "PersistentVolumeClaim"):
                    raise Unsupported(f"labels.includeTemplates: the templates of a {obj['kind']} are not rendered")
                places += TEMPLATE_LABELS.get(obj["kind"], ())
            for place in places:
                node = obj
                for key in place:
                    node = node.setdefault(key, {})
                node.setdefault("labels", {}).update(entry["pairs"])
    for image in kustomization.get("images", []):
        if set(image) - {"name", "newName", "newTag"}:
            raise Unsupported(f"{folder}: images: only name, newName and newTag are rendered")
        for container in containers(objects):
            name, _, tag = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
    return objects


def merge(base, patch, field: str = ""):
    """A strategic merge patch of `base` (a copy; the arguments are not changed)."""
    if isinstance(patch, dict):
        if any(str(k).startswith("$") for k in patch):
            raise Unsupported(f"{field}: patch directives ($patch, $setElementOrder) are not rendered")
        out = copy.deepcopy(base) if isinstance(base, dict) else {}
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = merge(out.get(key), value, key)
        return out
    if isinstance(patch, list) and isinstance(base, list) and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        out = copy.deepcopy(base)
        for item in patch:
            at = next((i for i, old in enumerate(out) if old.get(key) == item.get(key)), None)
            if at is None:
                out.append(copy.deepcopy(item))
            else:
                out[at] = merge(out[at], item, field)
        return out
    return copy.deepcopy(patch)


def _rename_references(node, renamed: Dict[Tuple[str, str], str]) -> None:
    if isinstance(node, list):
        for item in node:
            _rename_references(item, renamed)
    elif isinstance(node, dict):
        for field, name_key, kind in REFERENCES:
            ref = node.get(field)
            if isinstance(ref, dict) and (kind, ref.get(name_key)) in renamed:
                ref[name_key] = renamed[(kind, ref[name_key])]
        for value in node.values():
            _rename_references(value, renamed)


def pod_spec(obj: dict) -> dict:
    if obj["kind"] != "CronJob":
        raise Unsupported(f"no pod template read from a {obj['kind']}")
    return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def containers(objects: List[dict]) -> List[dict]:
    found = []
    for obj in objects:
        if obj["kind"] == "CronJob":
            spec = pod_spec(obj)
            found += spec.get("initContainers", []) + spec["containers"]
    return found
