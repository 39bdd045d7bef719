"""The one exception the registry raises, with an MLflow-style code."""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    RESOURCE_DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"
    INVALID_PARAMETER_VALUE = "INVALID_PARAMETER_VALUE"
    RESOURCE_ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"
    # MLflow's code for a request the resource's state does not allow now (HTTP 400, not
    # retried by MLflow's client): a gated move recorded as pending.
    INVALID_STATE = "INVALID_STATE"


class RegistryError(Exception):
    """A refused registry operation; ``message`` names the model, version or alias at fault."""

    def __init__(self, code: ErrorCode | str, message: str) -> None:
        self.code = ErrorCode(code)
        self.message = message
        super().__init__(f"{self.code.value}: {message}")


def not_found(message: str) -> RegistryError:
    return RegistryError(ErrorCode.RESOURCE_DOES_NOT_EXIST, message)


def invalid(message: str) -> RegistryError:
    return RegistryError(ErrorCode.INVALID_PARAMETER_VALUE, message)


def exists(message: str) -> RegistryError:
    return RegistryError(ErrorCode.RESOURCE_ALREADY_EXISTS, message)
