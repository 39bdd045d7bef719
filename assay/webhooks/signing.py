"""MLflow's webhook signature (``mlflow.webhooks.delivery``), after Standard Webhooks.

Every delivery carries ``X-MLflow-Delivery-Id`` (the same for every attempt of one
delivery), ``X-MLflow-Timestamp`` (Unix seconds of this attempt) and, when the webhook has a
secret, ``X-MLflow-Signature: v1,<base64 HMAC-SHA256>`` over
``"<delivery id>.<timestamp>.<body>"`` with the secret's UTF-8 bytes as the key. A receiver
recomputes it over the raw body, compares in constant time, and refuses old timestamps.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION = "v1"


def signature(secret: str, delivery_id: str, timestamp: str, body: str) -> str:
    """The ``X-MLflow-Signature`` value: ``v1,`` and the base64 HMAC-SHA256."""
    signed = f"{delivery_id}.{timestamp}.{body}".encode()
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def headers(delivery_id: str, timestamp: str, body: str, secret: str | None) -> dict[str, str]:
    """The headers of one attempt (no signature without a secret, as MLflow)."""
    out = {
        "Content-Type": "application/json",
        DELIVERY_ID_HEADER: delivery_id,
        TIMESTAMP_HEADER: timestamp,
    }
    if secret:
        out[SIGNATURE_HEADER] = signature(secret, delivery_id, timestamp, body)
    return out
