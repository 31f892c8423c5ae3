from __future__ import annotations

from tests.fixtures.pytest_fixtures import (  # noqa: F401  (fixtures used by this package)
    offline_models_env,
    random_llmlingua2_dir,
)
