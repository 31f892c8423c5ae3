"""The GPU image bakes the compressor weights its profiles expect (no Docker here: the file)."""

import re
from pathlib import Path

from serve_app.profiles import PROFILES

DOCKERFILE = Path(__file__).resolve().parents[3] / "cluster" / "Dockerfile"


def test_the_image_bakes_the_compressor_model_of_every_gpu_profile():
    text = DOCKERFILE.read_text()
    [default] = re.findall(r"^ARG COMPRESSOR_MODEL=(\S+)$", text, re.M)
    expected = {p.compressor.model for p in PROFILES.values() if p.compressor} - {None}
    assert expected == {default}
    # Downloaded at build time into the cache the service reads, and checked offline there.
    assert "MEMSERVE_COMPRESSOR_MODEL=${COMPRESSOR_MODEL}" in text
    assert "snapshot_download(os.environ['MEMSERVE_COMPRESSOR_MODEL'])" in text
    assert "compressor_available(os.environ['MEMSERVE_COMPRESSOR_MODEL'])" in text
