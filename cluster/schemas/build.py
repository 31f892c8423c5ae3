"""Rebuild cluster/schemas/kuberay-v1.schema.json (tests only read the committed file).

    pip install kubernetes-validate==1.37.0   # ships Kubernetes' OpenAPI as JSON Schema
    python -m cluster.schemas.build

The output holds the KubeRay definitions from kuberay_v1.py and the core Kubernetes
definitions they reach (strict variant: unknown fields rejected), descriptions removed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cluster.schemas.kuberay_v1 import DEFS, K8S_ROOTS

K8S_VERSION = "v1.33.0"
OUT = Path(__file__).with_name("kuberay-v1.schema.json")


def k8s_definitions_path(version: str = K8S_VERSION) -> Path:
    import kubernetes_validate

    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    return base / f"{version}-local-strict" / "_definitions.json"


def _refs(node) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        target = node.get("$ref")
        if isinstance(target, str) and target.startswith("#/$defs/"):
            found.add(target.removeprefix("#/$defs/"))
        for value in node.values():
            found |= _refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _refs(value)
    return found


def _strip_descriptions(node):
    if isinstance(node, dict):
        # A property *named* description maps to a schema (a dict), never to a string.
        return {
            k: _strip_descriptions(v)
            for k, v in node.items()
            if not (k == "description" and isinstance(v, str))
        }
    if isinstance(node, list):
        return [_strip_descriptions(v) for v in node]
    return node


def closure(k8s_defs: dict, roots) -> dict:
    keep: dict = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep[name] = k8s_defs[name]
        todo.extend(_refs(k8s_defs[name]) - keep.keys())
    return keep


def build(k8s_definitions: Path) -> dict:
    k8s_defs = json.loads(k8s_definitions.read_text())["$defs"]
    defs = {**closure(k8s_defs, K8S_ROOTS), **DEFS}
    missing = {r for d in defs.values() for r in _refs(d)} - defs.keys()
    if missing:
        raise SystemExit(f"unresolved $refs: {sorted(missing)}")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$comment": (
            "KubeRay ray.io/v1 RayService/RayJob (cluster/schemas/kuberay_v1.py) with "
            f"Kubernetes {K8S_VERSION} core definitions (kubernetes-validate 1.37.0, strict). "
            "Rebuild: python -m cluster.schemas.build"
        ),
        "$defs": _strip_descriptions(dict(sorted(defs.items()))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k8s-definitions", type=Path, default=None)
    args = parser.parse_args()
    source = args.k8s_definitions or k8s_definitions_path()
    OUT.write_text(json.dumps(build(source), indent=1, sort_keys=False) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
