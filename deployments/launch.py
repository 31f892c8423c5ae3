"""`make serve`: start memserve from a `serve deploy` config on a private local Ray cluster.

    python -m deployments.launch configs/local.yaml

Foreground; Ctrl-C (or SIGTERM) stops the application, the Ray cluster it started and the
embedded PostgreSQL, and leaves every byte of data in MEMSERVE_DATA_DIR.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import yaml

from serve_app.settings import Settings
from serve_app.storage import embedded_pg

logger = logging.getLogger("memserve.launch")


def load_config(path: Path, settings: Settings) -> dict:
    config = yaml.safe_load(path.read_text())
    http = config.setdefault("http_options", {})
    # The environment wins over the file, so one config serves any port or data directory.
    if "MEMSERVE_HTTP_PORT" in os.environ or "port" not in http:
        http["port"] = settings.http_port
    if "MEMSERVE_HTTP_HOST" in os.environ or "host" not in http:
        http["host"] = settings.http_host
    return config


class Service:
    """Owns the pieces `make serve` starts, in the order it must stop them."""

    def __init__(self, config_path: Path, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.config_path = config_path
        self.cluster = None
        self.embedded_pgdata: Path | None = None

    def start(self, timeout_s: float = 300) -> None:
        import ray

        from deployments.local_cluster import LocalRayCluster

        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        env = {
            k: v for k, v in os.environ.items() if k.startswith(("MEMSERVE_", "HF_", "TIKTOKEN"))
        }
        env["MEMSERVE_DATA_DIR"] = str(s.data_dir.resolve())
        env.setdefault("HF_HUB_OFFLINE", "1")
        if s.pg_dsn is None:
            self.embedded_pgdata = s.pg_data_dir.resolve()
            env["MEMSERVE_PG_DSN"] = embedded_pg.ensure_running(self.embedded_pgdata)
            logger.info("embedded PostgreSQL under %s", self.embedded_pgdata)
        os.environ.update(env)

        self.cluster = LocalRayCluster(s.ray_port_base, s.ray_num_cpus, env=env)
        address = self.cluster.start()
        ray.init(address=address, namespace="serve", log_to_driver=False)

        self.deploy(timeout_s)
        logger.info(
            "memserve ready on http://%s:%s (Ray dashboard %s)",
            s.http_host,
            s.http_port,
            self.cluster.dashboard_url,
        )

    def deploy(self, timeout_s: float = 300) -> None:
        """Apply the config file to the running cluster (what `serve deploy` does)."""
        from ray.serve._private import api as serve_api
        from ray.serve.config import gRPCOptions
        from ray.serve.schema import ServeDeploySchema

        config = ServeDeploySchema.model_validate(load_config(self.config_path, self.settings))
        client = serve_api.serve_start(
            http_options=config.http_options.model_dump(),
            proxy_location=config.proxy_location,
            grpc_options=gRPCOptions(**config.grpc_options.model_dump()),
        )
        client.deploy_apps(config, _blocking=False)
        self._wait_running([a.name for a in config.applications], timeout_s)

    def _wait_running(self, names: list[str], timeout_s: float) -> None:
        from ray import serve

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            apps = serve.status().applications
            states = {n: apps[n].status if n in apps else "NOT_STARTED" for n in names}
            if all(st == "RUNNING" for st in states.values()):
                return
            failed = {
                f"{n}/{d}": st.message
                for n in names
                if n in apps and "FAIL" in apps[n].status
                for d, st in apps[n].deployments.items()
                if st.message
            }
            if failed:
                raise RuntimeError(f"deployment failed: {failed}")
            time.sleep(1)
        raise TimeoutError(f"applications not running after {timeout_s}s: {states}")

    def stop(self, graceful_s: float = 20) -> None:
        try:
            import ray
            from ray import serve

            if ray.is_initialized():
                # Give replicas a bounded time to drain; the cluster is stopped regardless.
                t = threading.Thread(target=serve.shutdown, daemon=True)
                t.start()
                t.join(graceful_s)
                ray.shutdown()
        finally:
            if self.cluster is not None:
                self.cluster.stop()
                self.cluster = None
            if self.embedded_pgdata is not None:
                embedded_pg.stop(self.embedded_pgdata)
                self.embedded_pgdata = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default="configs/local.yaml", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    service = Service(args.config)
    try:
        service.start()
        print("memserve is up. Ctrl-C stops it.", flush=True)
        stop.wait()
    finally:
        logger.info("stopping memserve")
        service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
