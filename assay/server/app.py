"""``assay server``: the registry over HTTP, as a Starlette application.

Every endpoint but ``/health`` and ``/openapi.json`` needs a token
(``Authorization: Bearer assay_...``, which MLflow's clients send from
``MLFLOW_TRACKING_TOKEN``; HTTP Basic with the token as password works too, for clients that
only know ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``). No or an unknown token: 401
UNAUTHENTICATED; a role too small: 403 PERMISSION_DENIED. The registry's calls block, so they
run in Starlette's thread pool.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections import defaultdict
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from assay.registry.errors import RegistryError
from assay.registry.store import Registry
from assay.registry.tokens import Principal, TokenStore
from assay.server import assay_api, mlflow_api
from assay.server.http import ApiError, Call
from assay.server.mlflow_api import Endpoint

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024  # a 256 KiB template, escaped as JSON, fits with room to spare
CONNECTIONS_ENV_PREFIX = "ASSAY_SERVER_"  # ASSAY_SERVER_REQUEST_TIMEOUT_S, _MAX_CONNECTIONS
ENDPOINTS: tuple[Endpoint, ...] = mlflow_api.ENDPOINTS + assay_api.ENDPOINTS


def _error(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


async def _params(request: Request) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, value in request.query_params.multi_items():
        if key in params:
            held = params[key]
            params[key] = [*held, value] if isinstance(held, list) else [held, value]
        else:
            params[key] = value
    if request.method == "GET":
        return params
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError("INVALID_PARAMETER_VALUE", f"request body over {MAX_BODY_BYTES} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ApiError("INVALID_PARAMETER_VALUE", f"request body over {MAX_BODY_BYTES} bytes")
    if body.strip():
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError("INVALID_PARAMETER_VALUE", f"request body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ApiError("INVALID_PARAMETER_VALUE", "request body must be a JSON object")
        params.update(data)
    return params


def _run(endpoint: Endpoint, call: Call) -> dict[str, Any]:
    try:
        return endpoint.handler(call)
    except RegistryError as exc:
        raise ApiError.from_registry(exc) from exc


def create_app(registry: Registry, tokens: TokenStore | None = None) -> Starlette:
    """The server's application over an open registry (tokens in the same database)."""
    store = tokens or TokenStore(registry)
    by_path: dict[str, dict[str, Endpoint]] = defaultdict(dict)
    for endpoint in ENDPOINTS:
        by_path[endpoint.path][endpoint.method] = endpoint

    def dispatcher(methods: dict[str, Endpoint]) -> Any:
        async def handle(request: Request) -> Response:
            endpoint = methods[request.method]
            try:
                secret = _bearer(request)
                principal: Principal | None = None
                if secret is not None:
                    principal = await run_in_threadpool(store.authenticate, secret)
                if principal is None:
                    raise ApiError(
                        "UNAUTHENTICATED",
                        "a valid API token is required (Authorization: Bearer <token>; "
                        "MLflow clients read it from MLFLOW_TRACKING_TOKEN)",
                    )
                call = Call(registry, principal, await _params(request), dict(request.path_params))
                result = await run_in_threadpool(_run, endpoint, call)
            except ApiError as exc:
                return _error(exc)
            except Exception:
                # The detail goes to the server's log, not to the caller.
                logger.exception("%s %s failed", request.method, request.url.path)
                return _error(ApiError("INTERNAL_ERROR", "internal error; see the server log"))
            return JSONResponse(result)

        return handle

    routes = [
        Route(path, dispatcher(methods), methods=list(methods)) for path, methods in by_path.items()
    ]
    routes.append(Route("/health", lambda _: PlainTextResponse("OK"), methods=["GET"]))
    document = openapi_document()
    routes.append(Route("/openapi.json", lambda _: JSONResponse(document), methods=["GET"]))

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        code = "ENDPOINT_NOT_FOUND" if status in (404, 405) else "BAD_REQUEST"
        message = f"no endpoint {request.method} {request.url.path}"
        return JSONResponse({"error_code": code, "message": message}, status_code=status)

    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1 description of every endpoint, with the role each needs."""
    error = {"$ref": "#/components/schemas/Error"}
    paths: dict[str, dict[str, Any]] = defaultdict(dict)
    for endpoint in ENDPOINTS:
        names = [part[1:-1] for part in endpoint.path.split("/") if part.startswith("{")]
        operation: dict[str, Any] = {
            "summary": endpoint.summary,
            "operationId": f"{endpoint.handler.__name__}_{endpoint.method.lower()}",
            "tags": ["mlflow" if endpoint.path.startswith("/api/2.0/") else "assay"],
            "description": (endpoint.handler.__doc__ or "").strip()
            + f"\n\nNeeds role: {endpoint.role.label}.",
            "x-assay-role": endpoint.role.label,
            "security": [{"bearer": []}],
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {}}},
                **{
                    str(status): {
                        "description": code,
                        "content": {"application/json": {"schema": error}},
                    }
                    for code, status in (
                        ("INVALID_PARAMETER_VALUE", 400),
                        ("UNAUTHENTICATED", 401),
                        ("PERMISSION_DENIED", 403),
                        ("RESOURCE_DOES_NOT_EXIST", 404),
                    )
                },
            },
        }
        if names:
            operation["parameters"] = [
                {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                for n in names
            ]
        paths[endpoint.path][endpoint.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "assay registry server",
            "version": "1",
            "description": "MLflow's Model Registry REST API over assay's registry, and "
            "assay's own endpoints for the event log, prompts and gate verdicts.",
        },
        "paths": dict(paths),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {
                        "error_code": {"type": "string"},
                        "message": {"type": "string"},
                    },
                    "required": ["error_code", "message"],
                }
            },
        },
    }
