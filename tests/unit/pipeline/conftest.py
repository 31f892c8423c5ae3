from __future__ import annotations

import pytest

from tests.fixtures.pytest_fixtures import (  # noqa: F401  (fixtures used by this package)
    offline_models_env,
    random_compressor,
    random_llmlingua2_dir,
    random_sentence_model_dir,
)


@pytest.fixture(scope="session")
def minilm(offline_models_env):  # noqa: F811
    from sentence_transformers import SentenceTransformer

    from serve_app.settings import DEFAULT_EMBEDDING_MODEL, resolve_embedding_model

    return SentenceTransformer(resolve_embedding_model(DEFAULT_EMBEDDING_MODEL), device="cpu")
