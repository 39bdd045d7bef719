"""The registry database's owner and service roles (deploy/postgres/registry_roles.sql).

The owner role owns the tables and the event log's append-only triggers and runs the
migrations; every process of the deployment connects as the service role, which can read and
write rows and append events, and cannot alter, disable or drop the triggers. Used by
deploy/stack.py and the tests; a deployment runs the SQL file with ``psql`` (deploy/README.md).

Not imported by the library or the code location.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url

OWNER = "assay_owner"
SERVICE = "assay_service"
ROLES_SQL = Path(__file__).resolve().parent / "postgres" / "registry_roles.sql"


def _libpq(url: str) -> str:
    """A SQLAlchemy Postgres URL as libpq's (what psycopg connects with)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def apply_roles(admin_url: str) -> None:
    """Run registry_roles.sql in ``admin_url``'s database, as its (superuser) role."""
    import psycopg

    with psycopg.connect(_libpq(admin_url), autocommit=True) as connection:
        connection.execute(ROLES_SQL.read_text())


def prepare_registry_database(admin_url: str, owner_url: str) -> None:
    """The roles, the registry's schema migrated by the owner (and the request cache's table,
    when the cache shares the database), then the grants on the tables that now exist.

    ``admin_url`` and ``owner_url`` are SQLAlchemy URLs of the same database, as a superuser and
    as ``assay_owner``. The same steps, by hand: ``psql -f registry_roles.sql`` as a superuser,
    ``assay registry list`` with ``ASSAY_REGISTRY_URL`` naming the owner (opening the registry
    migrates it), ``psql -f registry_roles.sql`` again."""
    from assay.models.cache import RequestCache
    from assay.registry import Registry

    apply_roles(admin_url)
    Registry.open(owner_url).close()
    RequestCache(owner_url).close()
    apply_roles(admin_url)
