"""Changing batch settings in the config and deploying it again reconfigures replicas in place."""

import yaml

from deployments.launch import Service


def _embedder(config: dict) -> dict:
    deployments = (d for app in config["applications"] for d in app["deployments"])
    return next(d for d in deployments if d["name"] == "Embedder")


def test_user_config_change_applies_without_restart(running, tmp_path):
    service: Service = running.service
    original = service.config_path
    with running.client() as c:
        before = c.get("/readyz").json()["checks"]["embedder"]
    config = yaml.safe_load(original.read_text())
    _embedder(config)["user_config"] = {"max_batch_size": 7, "batch_wait_timeout_s": 0.05}
    changed = tmp_path / "local-changed.yaml"
    changed.write_text(yaml.safe_dump(config))
    try:
        service.config_path = changed
        service.deploy()
        with running.client() as c:
            after = c.get("/readyz").json()["checks"]["embedder"]
            assert after["max_batch_size"] == 7
            assert after["batch_wait_timeout_s"] == 0.05
            assert after["pid"] == before["pid"], "the replica was restarted"
            # and it still embeds, with the new batch settings
            r = c.post(
                "/v1/memories",
                json={
                    "user_id": "reconfig-user",
                    "session_id": "s",
                    "wait": True,
                    "messages": [{"role": "user", "content": f"fact {i}"} for i in range(20)],
                },
            )
            assert r.status_code == 200 and r.json()["pending"] == 0
    finally:
        service.config_path = original
        service.deploy()
    with running.client() as c:
        restored = c.get("/readyz").json()["checks"]["embedder"]
    assert (
        restored["max_batch_size"]
        == _embedder(yaml.safe_load(original.read_text()))["user_config"]["max_batch_size"]
    )
    assert restored["pid"] == before["pid"]
