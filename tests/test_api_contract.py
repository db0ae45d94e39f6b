"""The OpenAPI document is the contract, exactly (issue 13 section 2).

schemathesis generates requests from the served /openapi.json, valid and invalid ones, for every
operation, and runs all its checks on the answers: no server error, every status and body is the
one documented, schema-valid requests are accepted, schema-invalid ones rejected, the token is
enforced. Against the real app: a champion trained on a small generated catalogue, its real
PostgreSQL database and MLflow registry, a valid token.

The document is a function of the settings alone, so it is built at import (schemathesis makes
one test per operation from it; its lazy fixture loader does not run under pytest 9.2) and the
served document is checked to be that one. The example count is bounded and the generation
derandomized with a fixed seed: the same requests on every run and machine. Nothing is timed.
"""

from __future__ import annotations

import dataclasses
import os

import pytest
import schemathesis
from fastapi.testclient import TestClient
from schemathesis.config import SchemathesisConfig

from mlops_cli import config, db, registry, store
from mlops_cli.api import create_app

from test_api import TOKEN, kill_pipeline, trained  # noqa: F401  (trained: versions 1 and 2 of a small model)

pytestmark = pytest.mark.slow

# Small limits: the boundary requests (MAX_TEXT_CHARS + 1 characters, MAX_BATCH_SIZE + 1 items)
# stay cheap to send, and the document must state these values, not the defaults.
LIMITS = {"max_text_chars": 60, "max_batch_size": 3}
CONFIG = SchemathesisConfig.from_dict({
    "seed": 20261126,
    # max-examples bounds the fuzzing phase per operation; the examples and coverage phases add
    # a bounded, deterministic set of boundary cases derived from the schema.
    "generation": {"max-examples": 25, "deterministic": True, "database": "none"},
    # the token as the document's security scheme: the auth checks then also send none and a wrong one
    "auth": {"openapi": {"API token": {"bearer": TOKEN}}},
})


class _Served:
    """The ASGI app schemathesis calls (its requests, and the ones its checks send again): the
    served app, created by the `served` fixture once the database and the champion exist."""

    app = None

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)


SERVED = _Served()
DOCUMENT = create_app(config.Settings(api_token=TOKEN, **LIMITS), start_background=False).openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)
schema.app = SERVED


@pytest.fixture(scope="module")
def served(trained):  # noqa: F811
    """The app under test, over the module's database and registry. Champion v2 with v1 as the
    previous champion, so a rollback can succeed (once: then there is nothing to roll back to)."""
    registry.set_alias(trained.settings, registry.CHAMPION, trained.v2)
    registry.set_alias(trained.settings, registry.PREVIOUS, trained.v1)
    settings = dataclasses.replace(trained.settings, api_token=TOKEN, **LIMITS)
    app = create_app(settings, start_background=False)
    mp = pytest.MonkeyPatch()
    mp.setenv("MLOPS_FAULT", "train:hang")  # a launched retrain waits in its train step (then 409s)
    SERVED.app = app
    try:
        yield app
    finally:
        mp.undo()
        from schemathesis.python import asgi

        asgi.shutdown_lifespans()  # schemathesis started the app's lifespan: the log is flushed
        _kill_launched_pipelines(settings)
        registry.delete_alias(trained.settings, registry.PREVIOUS)
        registry.set_alias(trained.settings, registry.CHAMPION, trained.v1)


def _kill_launched_pipelines(settings) -> None:
    conn = db.open_db(settings)
    try:
        pids = {r["pid"] for r in store.list_runs(conn, limit=1000, status="running") if r.get("pid")}
    finally:
        conn.close()
    for pid in pids - {os.getpid()}:
        kill_pipeline(pid)


def test_the_fuzzed_document_is_the_served_one(served):
    with TestClient(served) as c:  # a lifespan of its own, ended here
        assert c.get("/openapi.json").json() == DOCUMENT
    product = DOCUMENT["components"]["schemas"]["ProductIn"]["properties"]
    assert product["designation"]["maxLength"] == LIMITS["max_text_chars"]
    batch = DOCUMENT["components"]["schemas"]["PredictBatch"]["properties"]["items"]
    assert batch["maxItems"] == LIMITS["max_batch_size"]


@schema.parametrize()
def test_every_operation_keeps_the_contract(case, served):
    case.call_and_validate()
