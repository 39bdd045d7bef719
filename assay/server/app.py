"""``assay server``: the registry over HTTP, as a Starlette application.

Every endpoint but ``/health`` and ``/openapi.json`` needs a token
(``Authorization: Bearer assay_...``, which MLflow's clients send from
``MLFLOW_TRACKING_TOKEN``; HTTP Basic with the token as password works too, for clients that
only know ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``). No or an unknown token: 401
UNAUTHENTICATED; a role too small: 403 PERMISSION_DENIED. The registry's calls block, so they
run in Starlette's thread pool.

Before any route, a request must name an allowed ``Host`` (``ASSAY_SERVER_ALLOWED_HOSTS``,
default loopback names; 400 otherwise), come from no browser page elsewhere (``Origin``; 403)
and declare ``application/json`` for any body it carries (415); a body must be a JSON object
of valid Unicode text (400 INVALID_PARAMETER_VALUE otherwise). These rules are
``assay.core.http_rules``', shared with ``assay serve``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from assay.core.http_rules import (
    BodyError,
    allowed_hosts_from_env,
    parse_json_object,
    request_refusal,
)
from assay.registry.errors import RegistryError
from assay.registry.store import Registry
from assay.registry.tokens import Principal, TokenStore
from assay.server import assay_api, mlflow_api, webhooks_api
from assay.server.http import ApiError, Call
from assay.server.mlflow_api import Endpoint

if TYPE_CHECKING:
    from assay.webhooks.delivery import WebhookWorker

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024  # a 256 KiB template, escaped as JSON, fits with room to spare
MAX_JSON_DEPTH = 32  # MLflow's and assay's bodies nest 3 levels at most
ALLOWED_HOSTS_ENV = "ASSAY_SERVER_ALLOWED_HOSTS"
CONNECTIONS_ENV_PREFIX = "ASSAY_SERVER_"  # ASSAY_SERVER_REQUEST_TIMEOUT_S, _MAX_CONNECTIONS
ENDPOINTS: tuple[Endpoint, ...] = (
    mlflow_api.ENDPOINTS + webhooks_api.ENDPOINTS + assay_api.ENDPOINTS
)


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
            params.update(parse_json_object(body, MAX_JSON_DEPTH))
        except BodyError as exc:
            raise ApiError("INVALID_PARAMETER_VALUE", str(exc)) from None
    return params


_REFUSAL_CODES = {400: "BAD_REQUEST", 403: "PERMISSION_DENIED", 415: "BAD_REQUEST"}


class RequestGuard:
    """ASGI middleware: the Host, Origin and JSON-body rules, answered in MLflow's error shape."""

    def __init__(self, app: Any, allowed_hosts: tuple[str, ...]) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
            }
            refused = request_refusal(scope["method"], headers, self.allowed_hosts)
            if refused is not None:
                body = {"error_code": _REFUSAL_CODES[refused.status], "message": refused.message}
                await JSONResponse(body, status_code=refused.status)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _run(endpoint: Endpoint, call: Call) -> dict[str, Any]:
    try:
        return endpoint.handler(call)
    except RegistryError as exc:
        raise ApiError.from_registry(exc) from exc


def create_app(
    registry: Registry,
    tokens: TokenStore | None = None,
    allowed_hosts: tuple[str, ...] | None = None,
    webhook_worker: WebhookWorker | None = None,
) -> Starlette:
    """The server's application over an open registry (tokens in the same database).

    ``allowed_hosts``: the ``Host`` names served (``*``: any); by default
    ``$ASSAY_SERVER_ALLOWED_HOSTS`` or the loopback names. ``webhook_worker``: started with
    the application and stopped with it (``assay server`` passes one; without it webhooks
    are managed but nothing is delivered).
    """
    if allowed_hosts is None:
        allowed_hosts = allowed_hosts_from_env(ALLOWED_HOSTS_ENV, os.environ)
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

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if webhook_worker is not None:
            webhook_worker.start()
        try:
            yield
        finally:
            if webhook_worker is not None:
                await run_in_threadpool(webhook_worker.stop)

    return Starlette(
        lifespan=lifespan,
        routes=routes,
        exception_handlers={HTTPException: http_error},
        middleware=[Middleware(RequestGuard, allowed_hosts=tuple(allowed_hosts))],
    )


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
