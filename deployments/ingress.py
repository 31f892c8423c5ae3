"""Ingress: serves the HTTP API v1 application (serve_app.api.app) and gives its routes the
Services they work with: this replica's PostgreSQL pool, the handles of the MemoryIndex (in the
index application, deployments/apps.py) and the IngestWorker, the JobOrchestrator, the admin
key and how many replicas share the rate limits."""

import ray
from ray import serve

from deployments.apps import sibling_memory_index
from deployments.handles import direct
from jobs import submit as job_submit
from serve_app.api.app import create_app
from serve_app.api.services import Services, install
from serve_app.maintenance.orchestration import JobOrchestrator
from serve_app.profiles import GroupResources
from serve_app.security.keys import admin_key_of
from serve_app.serving_env import install_gateway_error_page
from serve_app.settings import Settings

app = create_app(Settings())


@serve.ingress(app)
class IngressDeployment:
    def __init__(
        self, settings_env: dict, worker, embedder, replicas: int = 1, memory_index=None
    ) -> None:
        settings = Settings(**settings_env)
        memory_index = memory_index or sibling_memory_index()
        memory_index, worker, embedder = direct(memory_index), direct(worker), direct(embedder)
        self.services = Services(
            settings=settings,
            memory_index=memory_index,
            worker=worker,
            embedder=embedder,
            admin_key=admin_key_of(settings.admin_key, settings.data_dir),
            replicas=replicas,
        )
        self.services.jobs = JobOrchestrator(
            repo=self.services.repo,
            submit=job_submit.submit,
            submission_status=job_submit.ray_status,
            rollback=lambda: memory_index.rollback_generation.remote(),
            extraction_config=lambda: worker.extraction_config.remote(),
        )
        install(self.services)
        self.node_id = ray.get_runtime_context().get_node_id()
        install_gateway_error_page(self.node_id)

    def check_health(self) -> None:
        # Ray writes its 500 page again when this node's HAProxy manager restarts.
        install_gateway_error_page(self.node_id)


def build_ingress(group: GroupResources, settings_env: dict, worker, embedder):
    return (
        serve.deployment(IngressDeployment)
        .options(name="Ingress", **group.deployment_options())
        .bind(settings_env, worker, embedder, group.max_replicas)
    )
