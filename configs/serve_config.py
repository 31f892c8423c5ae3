"""The `serve deploy` config of a profile, as a dict and as YAML text.

`serve build` cannot import builder functions, so the files under configs/ are written from
the profiles here (`python -m configs.generate`). Per-deployment options mirror what the
builder applies in code: Serve lets the config override them, and `user_config` changes
reach running replicas through `reconfigure` without a restart.
"""

from __future__ import annotations

import yaml

from deployments.apps import APP_NAME, SEARCH_ROUTE, index_app
from serve_app.profiles import BatchedGroup, HardwareProfile, LLMGroup

IMPORT_PATH = "deployments.app:build_app"
INDEX_IMPORT_PATH = "deployments.app:build_index_app"
# The groups of the index application; every other group is in the main one.
INDEX_GROUPS = ("MemoryIndex",)


def deployment_entry(name: str, group) -> dict:
    entry: dict = {"name": name}
    if isinstance(group, LLMGroup):
        # Ray Serve LLM sets the LLM replica's ray_actor_options (runtime_env included) and
        # its placement group in code; a config value would replace them wholesale.
        entry.update(group.scaling_options())
    else:
        entry.update(group.deployment_options())
    if isinstance(group, BatchedGroup):
        entry["user_config"] = group.user_config()
    return entry


def serve_config(profile: HardwareProfile) -> dict:
    """Both applications of deployments/apps.py: the index one (the MemoryIndex, answering
    POST /v1/search) and the main one (route /, every other group)."""
    groups = profile.groups()

    def app(name: str, route: str, import_path: str, index: bool) -> dict:
        return {
            "name": name,
            "route_prefix": route,
            "import_path": import_path,
            "args": {"profile": profile.name},
            "deployments": [
                deployment_entry(n, g) for n, g in groups.items() if (n in INDEX_GROUPS) == index
            ],
        }

    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": profile.http_host, "port": profile.http_port},
        "applications": [
            app(index_app(APP_NAME), SEARCH_ROUTE, INDEX_IMPORT_PATH, True),
            app(APP_NAME, "/", IMPORT_PATH, False),
        ],
    }


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings as `|` blocks (serveConfigV2 stays readable in manifests)."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def to_yaml(data: dict) -> str:
    return yaml.dump(
        data, Dumper=_BlockDumper, sort_keys=False, default_flow_style=False, width=100
    )


def serve_config_yaml(profile: HardwareProfile) -> str:
    return to_yaml(serve_config(profile))
