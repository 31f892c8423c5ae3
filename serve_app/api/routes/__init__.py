"""HTTP API v1 by area, as FastAPI routers; serve_app.api.app assembles them."""
