"""The registry store: registered models, versions, aliases, stages, tags, prompt templates
and an append-only event log, behind one small API over SQLAlchemy.

Concurrency: every mutation is one transaction that first takes the store's write lock —
``BEGIN IMMEDIATE`` on SQLite, a transaction-scoped advisory lock on Postgres — and is retried
when the database reports it busy. Serializing writers keeps version numbers gap-free per
model and, just as important, makes event ids grow in commit order, so a reader that
remembers the last id it saw (the promotion sensor's cursor) never skips an event committed
later with a smaller id. The unique constraint on (model, version) backs this up on other
databases, where a clash is retried.
"""

from __future__ import annotations

from assay.registry.aliases import AliasRegistry
from assay.registry.prompts import PromptRegistry


class Registry(AliasRegistry, PromptRegistry):
    """Model and prompt registry over a SQLAlchemy URL. Open it with ``Registry.open(url)``.

    The parts: :mod:`~assay.registry.engine` (connection, transactions, event log),
    :mod:`~assay.registry.versions` (models, versions, tags, evaluations),
    :mod:`~assay.registry.aliases` (aliases, stages, the gate's veto) and
    :mod:`~assay.registry.prompts` (prompt templates).
    """
