"""The HTTP API's pure parts: request/response models, errors, cursors, job orchestration
helpers. The FastAPI routes themselves are deployments/ingress.py."""
