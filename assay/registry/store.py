"""The registry store: registered models, versions, aliases, stages, tags, prompt templates
and an append-only event log, behind one small API over SQLAlchemy.

Concurrency (one writer at a time, event ids in commit order) is the engine's: see
:mod:`assay.registry.engine`.
"""

from __future__ import annotations

from assay.registry.aliases import AliasRegistry
from assay.registry.prompts import PromptRegistry
from assay.registry.search import RegistrySearch


class Registry(AliasRegistry, PromptRegistry, RegistrySearch):
    """Model and prompt registry over a SQLAlchemy URL. Open it with ``Registry.open(url)``.

    The parts: :mod:`~assay.registry.engine` (connection, transactions, event log),
    :mod:`~assay.registry.versions` (models, versions, tags, evaluations),
    :mod:`~assay.registry.aliases` (aliases, stages, the gate's veto),
    :mod:`~assay.registry.prompts` (prompt templates) and
    :mod:`~assay.registry.search` (searches of models and versions, in SQL).
    """
