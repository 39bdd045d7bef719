"""``assay server``: the registry over HTTP (MLflow's Model Registry REST API and assay's own
endpoints), with API tokens, roles and the authenticated principal as the history's actor."""

from assay.server.app import create_app, openapi_document

__all__ = ["create_app", "openapi_document"]
