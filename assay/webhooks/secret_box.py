"""A webhook's signing secret at rest.

The server must read the secret back to sign, so it cannot keep a hash as it does for API
tokens. When the operator gives a key in ``$ASSAY_WEBHOOK_SECRET_KEY`` (a Fernet key:
``python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"``),
secrets are stored encrypted with it, and a copy of the database alone signs nothing. Without
a key they are stored as given: a generated key kept beside the database would protect
nothing (MLflow generates one per process when its key is unset, and then cannot read its
secrets after a restart). A secret sealed with a key the server no longer has fails that
webhook's deliveries with an error naming the variable, never the secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

SECRET_KEY_ENV = "ASSAY_WEBHOOK_SECRET_KEY"
_PLAIN = "plain:"
_FERNET = "fernet:"


class SecretUnavailable(RuntimeError):
    """A stored secret cannot be read back (no key, or another key)."""


def _fernet(environ: Mapping[str, str] | None):  # -> Fernet | None
    key = (os.environ if environ is None else environ).get(SECRET_KEY_ENV)
    if not key:
        return None
    from cryptography.fernet import Fernet  # only deployments with a key need it

    try:
        return Fernet(key.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise SecretUnavailable(
            f"${SECRET_KEY_ENV} is not a Fernet key (32 url-safe base64-encoded bytes)"
        ) from None


def seal(secret: str, environ: Mapping[str, str] | None = None) -> str:
    """The stored form of ``secret``: encrypted when a key is configured."""
    fernet = _fernet(environ)
    if fernet is None:
        return _PLAIN + secret
    return _FERNET + fernet.encrypt(secret.encode("utf-8")).decode("ascii")


def unseal(stored: str, environ: Mapping[str, str] | None = None) -> str:
    """The secret behind a stored form; ``SecretUnavailable`` if it cannot be read."""
    if stored.startswith(_PLAIN):
        return stored[len(_PLAIN) :]
    if not stored.startswith(_FERNET):
        raise SecretUnavailable("the stored webhook secret has an unknown form")
    fernet = _fernet(environ)
    if fernet is None:
        raise SecretUnavailable(f"the webhook secret is encrypted and ${SECRET_KEY_ENV} is not set")
    from cryptography.fernet import InvalidToken

    try:
        return fernet.decrypt(stored[len(_FERNET) :].encode("ascii")).decode("utf-8")
    except InvalidToken:
        raise SecretUnavailable(
            f"the webhook secret was encrypted with another key than ${SECRET_KEY_ENV}"
        ) from None
