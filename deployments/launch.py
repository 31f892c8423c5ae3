"""`make serve`: start memserve from a `serve deploy` config on a private local Ray cluster.

    python -m deployments.launch configs/local.yaml

Foreground; Ctrl-C (or SIGTERM) stops the application, the Ray cluster it started and the
embedded PostgreSQL within seconds (a second Ctrl-C skips the replicas' drain), and leaves every
byte of data in MEMSERVE_DATA_DIR. While it runs, the embedded PostgreSQL is started again if
it dies; one left running by a launcher that was killed is adopted.
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

from memserve import cluster_env
from serve_app.security.keys import ensure_admin_key
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
        self.pg_supervisor: embedded_pg.Supervisor | None = None
        # Set by a second Ctrl-C: stop without waiting for anything.
        self.hurry = threading.Event()
        self.owner_file = self.settings.data_dir / "ray-cluster.json"
        self.exports: dict[str, str] = {}

    def start(self, timeout_s: float = 300) -> None:
        import ray

        from deployments.local_cluster import LocalRayCluster
        from serve_app.processes import reap_orphan, record_owner

        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        # First, before anything is started or adopted: refuse if a launcher runs on this data
        # directory, else kill what one killed hard left of its cluster (its PostgreSQL is
        # adopted below).
        reap_orphan(self.owner_file)
        env = {
            k: v for k, v in os.environ.items() if k.startswith(("MEMSERVE_", "HF_", "TIKTOKEN"))
        }
        env["MEMSERVE_DATA_DIR"] = str(s.data_dir.resolve())
        env.setdefault("HF_HUB_OFFLINE", "1")
        if s.pg_dsn is None:
            self.embedded_pgdata = s.pg_data_dir.resolve()
            dsn = embedded_pg.ensure_running(self.embedded_pgdata)
            env["MEMSERVE_PG_DSN"] = dsn
            logger.info("embedded PostgreSQL under %s", self.embedded_pgdata)
            self.pg_supervisor = embedded_pg.Supervisor(self.embedded_pgdata, dsn).start()
        os.environ.update(env)

        self.cluster = LocalRayCluster(s.ray_port_base, s.ray_num_cpus, env=env)
        address = self.cluster.start()
        record_owner(self.owner_file, self.cluster.temp_dir, self.cluster.proc.pid)
        ray.init(address=address, namespace="serve", log_to_driver=False)

        # Written before the replicas start, so every one of them reads the same key.
        key_at = self.admin_key_source()
        # Written before deploying, so Ray's CLIs can watch the deployment come up.
        host = "127.0.0.1" if s.http_host in ("0.0.0.0", "::") else s.http_host
        self.exports = cluster_env.write(
            s.data_dir,
            self.cluster.token,
            self.cluster.dashboard_url,
            f"http://{host}:{s.http_port}",
            Path(sys.executable).parent,
        )
        self.deploy(timeout_s)
        logger.info(
            "memserve ready on http://%s:%s (Ray dashboard %s)",
            s.http_host,
            s.http_port,
            self.cluster.dashboard_url,
        )
        logger.info("admin key: %s", key_at)

    def admin_key_source(self) -> str:
        """Where the admin key is: MEMSERVE_ADMIN_KEY, or the file the first start wrote."""
        s = self.settings
        secret = s.admin_key.get_secret_value() if s.admin_key else None
        path = ensure_admin_key(secret, s.data_dir.resolve())[1]
        return "MEMSERVE_ADMIN_KEY" if path is None else str(path)

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

    def stop(self, graceful_s: float = 2) -> None:
        """Everything down in well under 10 s: replicas get `graceful_s` to drain (nothing is
        lost without it: messages are committed before they are answered and a worker batch
        is one transaction), then the cluster's processes are killed and PostgreSQL stopped."""
        started = time.monotonic()
        try:
            if self.pg_supervisor is not None:
                self.pg_supervisor.stop()
                self.pg_supervisor = None
            import ray

            if ray.is_initialized():
                self._bounded(self._serve_shutdown, graceful_s)
                logger.info("serve shut down at %.1f s", time.monotonic() - started)
            # PostgreSQL before the cluster: a driver still attached to a raylet that is being
            # killed can be ended by Ray on the spot, which left the server running.
            self._stop_postgresql()
            if ray.is_initialized():
                self._bounded(ray.shutdown, 1)
                logger.info("driver disconnected at %.1f s", time.monotonic() - started)
        finally:
            self._stop_postgresql()
            if self.cluster is not None:
                self.cluster.stop(timeout_s=0 if self.hurry.is_set() else 2)
                self.cluster = None
                self.owner_file.unlink(missing_ok=True)
                cluster_env.remove(self.settings.data_dir)
                logger.info("ray cluster stopped at %.1f s", time.monotonic() - started)
            logger.info("memserve stopped in %.1f s", time.monotonic() - started)

    def _stop_postgresql(self) -> None:
        if self.embedded_pgdata is not None:
            embedded_pg.stop(self.embedded_pgdata, timeout_s=3)
            self.embedded_pgdata = None

    @staticmethod
    def _serve_shutdown() -> None:
        from ray import serve

        serve.shutdown()

    def _bounded(self, fn, timeout_s: float) -> None:
        """Run `fn` for at most `timeout_s` (less after a second Ctrl-C); the rest of the stop
        does not depend on it finishing."""
        t = threading.Thread(target=fn, daemon=True)
        t.start()
        deadline = time.monotonic() + timeout_s
        while t.is_alive() and time.monotonic() < deadline and not self.hurry.is_set():
            t.join(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default="configs/local.yaml", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    service = Service(args.config)
    stop = threading.Event()

    def on_signal(*_) -> None:
        if stop.is_set():
            service.hurry.set()
            return
        stop.set()
        if not up.is_set():
            # Ctrl-C during start-up: abandon it; `finally` stops what was started.
            raise KeyboardInterrupt

    up = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    try:
        service.start()
        up.set()
        print(f"memserve is up. Admin key: {service.admin_key_source()}", flush=True)
        print(
            "Ray's CLIs (serve status|deploy, ray job submit|list) reach this cluster with, in"
            ' another shell:  eval "$(.venv/bin/memserve env)"\n'
            + cluster_env.shell_lines(service.exports)
            + "Ctrl-C stops it.",
            flush=True,
        )
        stop.wait()
    except KeyboardInterrupt:
        logger.info("start-up interrupted")
    finally:
        logger.info("stopping memserve")
        service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
