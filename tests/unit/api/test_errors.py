from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from pydantic import BaseModel

from serve_app.api.errors import ApiError, install_error_handling


class Body(BaseModel):
    n: int


def client(max_body_bytes: int = 64) -> TestClient:
    app = FastAPI()
    install_error_handling(app, max_body_bytes)

    @app.post("/echo")
    async def echo(body: Body) -> dict:
        return {"n": body.n}

    @app.get("/api-error")
    async def api_error() -> dict:
        raise ApiError(409, "no_llm", "summaries need an LLM backend")

    @app.get("/http-error")
    async def http_error() -> dict:
        raise HTTPException(status_code=418, detail="teapot")

    @app.get("/crash")
    async def crash() -> dict:
        raise ConnectionError("store down")

    return TestClient(app, raise_server_exceptions=False)


def test_every_error_has_one_json_shape():
    c = client()
    r = c.get("/api-error")
    assert r.status_code == 409
    assert r.json() == {"error": {"code": "no_llm", "message": "summaries need an LLM backend"}}
    r = c.get("/http-error")
    assert (r.status_code, r.json()) == (
        418,
        {"error": {"code": "http_error", "message": "teapot"}},
    )
    assert "retry-after" not in r.headers
    r = c.get("/crash")
    assert r.status_code == 503
    # An outage recovers by itself: the client is told when to come back.
    assert r.headers["retry-after"] == "1"
    assert r.json()["error"] == {
        "code": "unavailable",
        "message": "service temporarily unavailable: ConnectionError",
    }


def test_validation_errors_are_422_with_a_summary_and_details():
    r = client().post("/echo", json={"n": "x"})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "invalid_request"
    assert err["message"].startswith("n: ")
    assert [d["loc"] for d in err["details"]] == [["body", "n"]]


def test_bodies_over_the_limit_are_413():
    c = client(max_body_bytes=16)
    assert c.post("/echo", json={"n": 1}).json() == {"n": 1}
    r = c.post("/echo", content=b'{"n": 1' + b" " * 40 + b"}")
    assert r.status_code == 413
    assert r.json() == {
        "error": {"code": "body_too_large", "message": "request body exceeds 16 bytes"}
    }
