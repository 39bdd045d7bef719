"""The pieces every endpoint shares: errors as MLflow spells them, request parameters, roles.

An error is ``{"error_code": ..., "message": ...}`` with the HTTP status MLflow gives that code,
so MLflow's clients raise their usual ``RestException``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from assay.registry.errors import RegistryError
from assay.registry.store import Registry
from assay.registry.tokens import Principal, Role

STATUS = {
    "RESOURCE_DOES_NOT_EXIST": 404,
    "ENDPOINT_NOT_FOUND": 404,
    "INVALID_PARAMETER_VALUE": 400,
    "RESOURCE_ALREADY_EXISTS": 400,
    "INVALID_STATE": 400,
    "BAD_REQUEST": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_IMPLEMENTED": 501,
    "INTERNAL_ERROR": 500,
}


class ApiError(Exception):
    """A refused request: an MLflow error code, a sentence, and the matching HTTP status."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = STATUS.get(code, 400)

    @classmethod
    def from_registry(cls, exc: RegistryError) -> ApiError:
        return cls(exc.code.value, exc.message)

    def body(self) -> dict[str, str]:
        return {"error_code": self.code, "message": self.message}


def invalid(message: str) -> ApiError:
    return ApiError("INVALID_PARAMETER_VALUE", message)


@dataclass
class Call:
    """One request as a handler sees it: merged query and JSON parameters, and who calls."""

    registry: Registry
    principal: Principal
    params: dict[str, Any]
    path: dict[str, str] = field(default_factory=dict)

    @property
    def actor(self) -> str:
        """The event log's actor: always the authenticated principal."""
        return self.principal.name

    def require(self, role: Role, model: str | None = None) -> None:
        """PERMISSION_DENIED unless the caller holds ``role`` (on ``model``, if grants apply)."""
        held = self.principal.role_on(model)
        if held < role:
            where = f" on {model!r}" if model is not None and self.principal.grants else ""
            raise ApiError(
                "PERMISSION_DENIED",
                f"principal {self.principal.name!r} has role {held.label}{where}; "
                f"this needs {role.label}",
            )

    # -- typed parameters

    def text(self, name: str, *, required: bool = True, default: str | None = None) -> str:
        value = self.params.get(name)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is None or value == "":
            if required and default is None:
                raise invalid(f"missing value for required parameter {name!r}")
            return default if default is not None else ""
        if not isinstance(value, str):
            raise invalid(f"parameter {name!r} must be a string, got {type(value).__name__}")
        return value

    def optional_text(self, name: str) -> str | None:
        value = self.params.get(name)
        if value is None:
            return None
        return self.text(name, required=False, default="")

    def integer(self, name: str, *, default: int | None = None, minimum: int = 1) -> int:
        value = self.params.get(name)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is None or value == "":
            if default is None:
                raise invalid(f"missing value for required parameter {name!r}")
            return default
        if isinstance(value, bool):
            raise invalid(f"parameter {name!r} must be an integer, got {value!r}")
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if not isinstance(value, int) or value < minimum:
            raise invalid(f"parameter {name!r} must be an integer >= {minimum}, got {value!r}")
        return value

    def boolean(self, name: str, default: bool = False) -> bool:
        value = self.params.get(name)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise invalid(f"parameter {name!r} must be true or false, got {value!r}")

    def strings(self, name: str) -> list[str]:
        value = self.params.get(name)
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise invalid(f"parameter {name!r} must be a list of strings")
        return value

    def tags(self, name: str = "tags") -> dict[str, str]:
        """MLflow's ``[{"key": ..., "value": ...}, ...]`` as a dict."""
        value = self.params.get(name)
        if value is None:
            return {}
        if not isinstance(value, list):
            raise invalid(f"parameter {name!r} must be a list of {{key, value}} objects")
        out: dict[str, str] = {}
        for item in value:
            if not isinstance(item, Mapping) or not isinstance(item.get("key"), str):
                raise invalid(f"parameter {name!r}: each tag needs a string key, got {item!r}")
            tag_value = item.get("value", "")
            if not isinstance(tag_value, str):
                raise invalid(f"tag {item['key']!r}: value must be a string")
            out[item["key"]] = tag_value
        return out

    def moment(self, name: str) -> datetime | None:
        """An ISO 8601 time (naive means UTC) or milliseconds since the epoch."""
        raw = self.optional_text(name)
        if not raw:
            return None
        try:
            if raw.lstrip("-").isdigit():
                return datetime.fromtimestamp(int(raw) / 1000, tz=UTC)
            moment = datetime.fromisoformat(raw)
        except (ValueError, OverflowError, OSError):
            raise invalid(
                f"parameter {name!r} must be an ISO 8601 time or epoch milliseconds: {raw!r}"
            ) from None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


Handler = Callable[[Call], dict[str, Any]]


def millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
