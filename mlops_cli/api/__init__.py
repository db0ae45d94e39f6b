"""The prediction API (FastAPI): `create_app()` is the factory `mlops serve` runs.

Routes: POST /predict (one product or a batch), POST /feedback, GET /health, GET /metrics, and
the token-protected control API under /api. Interactive docs at /docs. One module a concern:

- app.py       create_app: state, middleware, error handlers, routers
- predict.py   POST /predict
- feedback.py  POST /feedback
- health.py    GET /health, GET /metrics
- control.py   /api/...: bearer token, actor, audit (api_audit), the control routes
- schemas.py   request and response models (the rules the OpenAPI document states)
- errors.py    domain errors -> HTTP statuses (ERROR_CODE_TO_HTTP_STATUS), 422 bodies
- routing.py   request metrics, body-size limit, the route class
"""

from .app import create_app
from .schemas import NO_MODEL

__all__ = ["NO_MODEL", "create_app"]
