"""API tokens for ``assay server``: who is calling, with which role, on which models.

A token is ``assay_`` followed by 32 random bytes (URL-safe base64). Only its SHA-256 is
stored: a leaked database does not hand out working tokens, and because the secret is random
and long a fast hash is enough (there is nothing to guess). The secret is shown once, when the
token is created.

Roles are ordered: ``reader`` reads; ``writer`` also creates models and versions, sets tags,
descriptions and ungated aliases; ``promoter`` also moves gated aliases (``champion``) and
stages; ``admin`` may do everything the API offers. A token with grants holds its role only on
the granted models and is a reader on every other one.
"""

from __future__ import annotations

import enum
import hashlib
import json
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from assay.registry import Registry, default_actor
from assay.registry.errors import invalid, not_found
from assay.registry.limits import ACTOR_MAX_CHARS, check_line
from assay.registry.names import check_name
from assay.registry.schema import TokenRow

TOKEN_PREFIX = "assay_"
# A token's last-used time is written at most this often: a stamp per request would turn every
# read into a write (and serialize readers on SQLite's write lock); a minute is precise enough
# to tell a token in use from a forgotten one.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class Role(enum.IntEnum):
    """What a principal may do; each role includes the ones below it."""

    READER = 1
    WRITER = 2
    PROMOTER = 3
    ADMIN = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: object) -> Role:
        if isinstance(value, Role):
            return value
        for role in cls:
            if isinstance(value, str) and value.lower() == role.label:
                return role
        raise invalid(f"role {value!r} is not one of {', '.join(r.label for r in cls)}")


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: the name the event log records, and what it may do."""

    name: str
    role: Role
    grants: frozenset[str] = frozenset()  # empty: the role holds on every model
    token_id: int | None = None

    def role_on(self, model: str | None) -> Role:
        """The role on ``model`` (outside its grants a principal is a reader)."""
        if not self.grants or model is None or model in self.grants:
            return self.role
        return min(self.role, Role.READER)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as listed: never the secret."""

    id: int
    prefix: str
    principal: str
    role: Role
    grants: tuple[str, ...]
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    revoked_by: str | None
    last_used_at: datetime | None = None  # to within LAST_USED_RESOLUTION; None: never used

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _info(row: TokenRow) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        prefix=row.prefix,
        principal=row.principal,
        role=Role.parse(row.role),
        grants=tuple(json.loads(row.grants)),
        created_at=row.created_at,
        created_by=row.created_by,
        revoked_at=row.revoked_at,
        revoked_by=row.revoked_by,
        last_used_at=row.last_used_at,
    )


def _check_principal(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise invalid(f"principal must be a non-empty name without surrounding spaces: {name!r}")
    if len(name) > ACTOR_MAX_CHARS:
        raise invalid(f"principal is longer than {ACTOR_MAX_CHARS} characters")
    return check_line(name, f"principal {name!r}")


class TokenStore:
    """Tokens kept in the registry's database (table ``api_tokens``)."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        # Token id → the last stamp this store wrote or claimed, so concurrent requests of one
        # process do not all queue for the write lock to find the stamp already fresh.
        self._stamped: dict[int, datetime] = {}
        self._stamping = threading.Lock()

    def create(
        self,
        principal: str,
        role: Role | str,
        grants: Iterable[str] = (),
        created_by: str | None = None,
    ) -> tuple[TokenInfo, str]:
        """A new token: its listing and the secret, which is not stored and not shown again."""
        principal = _check_principal(principal)
        level = Role.parse(role)
        if isinstance(grants, str):
            raise invalid("grants must be a list of model names, not a string")
        granted = sorted({check_name(g, "granted model") for g in grants})
        creator = _check_principal(created_by or default_actor())
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self._registry._now()

        def work(session: Session) -> TokenInfo:
            row = TokenRow(
                token_hash=hash_token(secret),
                prefix=secret[: len(TOKEN_PREFIX) + 6],
                principal=principal,
                role=level.label,
                grants=json.dumps(granted),
                created_at=now,
                created_by=creator,
            )
            session.add(row)
            session.flush()
            return _info(row)

        return self._registry._write(work), secret

    def list(self, include_revoked: bool = False) -> list[TokenInfo]:
        def work(session: Session) -> list[TokenInfo]:
            query = select(TokenRow).order_by(TokenRow.id)
            if not include_revoked:
                query = query.where(TokenRow.revoked_at.is_(None))
            return [_info(row) for row in session.scalars(query)]

        return self._registry._read(work)

    def revoke(self, token_id: int, revoked_by: str | None = None) -> TokenInfo:
        """Revoke a token by id; revoking twice is refused naming the first revocation."""
        revoker = _check_principal(revoked_by or default_actor())
        now = self._registry._now()

        def work(session: Session) -> TokenInfo:
            row = session.get(TokenRow, token_id)
            if row is None:
                raise not_found(f"token {token_id} does not exist")
            if row.revoked_at is not None:
                raise invalid(f"token {token_id} was already revoked by {row.revoked_by}")
            row.revoked_at = now
            row.revoked_by = revoker
            session.flush()
            return _info(row)

        return self._registry._write(work)

    def authenticate(self, secret: str) -> Principal | None:
        """The principal behind an active token, or None for an unknown or revoked one."""
        if not secret.startswith(TOKEN_PREFIX) or len(secret) > 128:
            return None
        digest = hash_token(secret)

        def work(session: Session) -> TokenRow | None:
            return session.scalars(
                select(TokenRow).where(TokenRow.token_hash == digest)
            ).one_or_none()

        row = self._registry._read(work)
        if row is None or row.revoked_at is not None:
            return None
        self._touch(row)
        return Principal(
            name=row.principal,
            role=Role.parse(row.role),
            grants=frozenset(json.loads(row.grants)),
            token_id=row.id,
        )

    def _touch(self, row: TokenRow) -> None:
        """Stamp the token as used now, unless it was stamped less than a resolution ago.

        The condition is also in the UPDATE, so concurrent requests write at most one stamp.
        A failed stamp (a locked or read-only database) does not refuse the request: it is
        bookkeeping, and the next request past the resolution tries again.
        """
        now = self._registry._now()
        stale = now - LAST_USED_RESOLUTION
        with self._stamping:
            known = [t for t in (row.last_used_at, self._stamped.get(row.id)) if t is not None]
            if known and max(known) > stale:
                return
            self._stamped[row.id] = now

        def work(session: Session) -> None:
            session.execute(
                update(TokenRow)
                .where(TokenRow.id == row.id)
                .where(or_(TokenRow.last_used_at.is_(None), TokenRow.last_used_at <= stale))
                .values(last_used_at=now)
            )

        try:
            self._registry._write(work)
        except Exception:
            return
