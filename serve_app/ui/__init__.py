"""The memory viewer's static assets (static/), served by the Ingress at /ui."""

from importlib import resources
from pathlib import Path


def static_dir() -> Path:
    """The folder of index.html, app.js and style.css inside the installed package."""
    return Path(str(resources.files("serve_app.ui") / "static"))
