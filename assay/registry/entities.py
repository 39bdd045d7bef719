"""Typed records the registry hands out. They are snapshots: changing one changes nothing."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from assay.core.records import TokenPrices
from assay.registry.errors import invalid
from assay.registry.names import version_key
from assay.registry.templates import render_template
from assay.registry.training_data import TrainingCorpus


class Stage(enum.StrEnum):
    """MLflow's legacy stages, kept for compatibility; aliases are the promotion mechanism."""

    NONE = "None"
    STAGING = "Staging"
    PRODUCTION = "Production"
    ARCHIVED = "Archived"

    @classmethod
    def parse(cls, value: object) -> Stage:
        """Case-insensitive lookup (``production`` → ``Production``)."""
        if isinstance(value, Stage):
            return value
        if value is None:
            return cls.NONE
        for stage in cls:
            if isinstance(value, str) and value.lower() == stage.value.lower():
                return stage
        choices = ", ".join(s.value for s in cls)
        raise invalid(f"stage {value!r} is not one of {choices}")


class EventKind(enum.StrEnum):
    MODEL_CREATED = "model_created"
    VERSION_CREATED = "version_created"
    ALIAS_SET = "alias_set"
    ALIAS_MOVED = "alias_moved"
    ALIAS_REMOVED = "alias_removed"
    # Before promotion decisions (assay.registry.gating): a gated alias refused to a version
    # whose per-scenario gate tag said failed. Kept so old logs still read.
    ALIAS_REFUSED = "alias_refused"
    STAGE_CHANGED = "stage_changed"
    TAG_SET = "tag_set"
    TAG_DELETED = "tag_deleted"
    DESCRIPTION_SET = "description_set"
    # A version's token prices changed; evaluations already run keep the prices they pinned.
    PRICES_SET = "prices_set"
    # A version's training-data manifest changed (assay.registry.training_data).
    TRAINING_DATA_SET = "training_data_set"
    PROMPT_CREATED = "prompt_created"
    PROMPT_VERSION_CREATED = "prompt_version_created"
    PROMPT_ALIAS_SET = "prompt_alias_set"
    EVALUATION_RECORDED = "evaluation_recorded"
    # An event the promotion sensor could not act on (bad source, unparseable name): recorded
    # with the reason, and the sensor moves past it.
    PROMOTION_REFUSED = "promotion_refused"
    # Promotion decisions (assay.registry.gating): a gated move waiting for its verdict, and
    # the verdict (every criterion's figures, the suite and code versions judged on).
    GATE_PENDING = "gate_pending"
    GATE_APPROVED = "gate_approved"
    GATE_REFUSED = "gate_refused"


@dataclass(frozen=True, slots=True)
class Prices:
    """Price per 1,000 tokens, in whatever currency the deployment uses; None when unknown."""

    prompt_per_1k: float | None = None
    completion_per_1k: float | None = None

    @classmethod
    def coerce(cls, value: Prices | Mapping[str, Any] | None) -> Prices:
        """Accept a ``Prices``, a mapping with ``prompt_per_1k``/``completion_per_1k``, or None."""
        if value is None:
            return cls()
        if isinstance(value, Prices):
            prices = value
        elif isinstance(value, Mapping):
            unknown = sorted(set(value) - {"prompt_per_1k", "completion_per_1k"})
            if unknown:
                raise invalid(f"unknown price key(s): {', '.join(map(str, unknown))}")
            prices = cls(value.get("prompt_per_1k"), value.get("completion_per_1k"))
        else:
            raise invalid(f"prices must be a mapping or Prices, got {type(value).__name__}")
        for name in ("prompt_per_1k", "completion_per_1k"):
            price = getattr(prices, name)
            if price is None:
                continue
            if isinstance(price, bool) or not isinstance(price, int | float):
                raise invalid(f"price {name} must be a number, got {price!r}")
            if not math.isfinite(price) or price < 0:
                raise invalid(f"price {name} must be a finite non-negative number, got {price!r}")
        return cls(
            None if prices.prompt_per_1k is None else float(prices.prompt_per_1k),
            None if prices.completion_per_1k is None else float(prices.completion_per_1k),
        )

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """Estimated cost of a token count, or None if a needed price is unknown."""
        total = 0.0
        for price, tokens in (
            (self.prompt_per_1k, prompt_tokens),
            (self.completion_per_1k, completion_tokens),
        ):
            if tokens:
                if price is None:
                    return None
                total += price * tokens / 1000.0
        return total

    def token_prices(self) -> TokenPrices | None:
        """The prices as the efficiency metrics take them; None (cost absent) unless both set."""
        if self.prompt_per_1k is None or self.completion_per_1k is None:
            return None
        return TokenPrices(self.prompt_per_1k, self.completion_per_1k)


@dataclass(frozen=True, slots=True)
class RegisteredModel:
    name: str
    description: str
    tags: dict[str, str]
    created_at: datetime
    updated_at: datetime
    latest_version: int | None  # None until the first version is registered
    aliases: dict[str, int] = field(default_factory=dict)  # alias → version number


@dataclass(frozen=True, slots=True)
class ModelVersion:
    model: str
    version: int
    source: str  # e.g. "bundled:smollm2-135m-instruct", "hf:/dir", "openai:http://h/v1#m"
    serving: dict[str, Any]  # normalized ServingConfig.to_dict()
    description: str
    tags: dict[str, str]
    aliases: tuple[str, ...]
    stage: Stage
    status: str
    created_at: datetime
    prices: Prices
    # The corpora the version declares it was trained on; empty when none is declared.
    training_data: tuple[TrainingCorpus, ...] = ()

    @property
    def key(self) -> str:
        """The ``model_version`` partition key, ``<model>@v<version>``."""
        return version_key(self.model, self.version)

    @property
    def uri(self) -> str:
        return f"models:/{self.model}/{self.version}"


@dataclass(frozen=True, slots=True)
class PromptTemplate:
    """A named prompt; its text lives in numbered ``PromptVersion``s."""

    name: str
    description: str
    created_at: datetime
    updated_at: datetime
    latest_version: int | None
    aliases: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PromptVersion:
    name: str
    version: int
    template: str
    variables: tuple[str, ...]  # declared names; render() needs exactly these
    description: str
    created_at: datetime
    aliases: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """``<name>@v<version>``; usable as a template id in model outputs."""
        return version_key(self.name, self.version)

    @property
    def uri(self) -> str:
        return f"prompts:/{self.name}/{self.version}"

    def render(self, variables: Mapping[str, object]) -> str:
        """Fill the placeholders; unknown or missing variables, or a render that fails or runs
        past a limit of ``assay.registry.templates``, raise INVALID_PARAMETER_VALUE naming the
        prompt and its version."""
        where = f"prompt {self.name!r} version {self.version} ({self.uri})"
        return render_template(self.template, self.variables, variables, where)


@dataclass(frozen=True, slots=True)
class Event:
    """One row of the append-only log. ``id`` grows monotonically in commit order."""

    id: int
    ts: datetime
    kind: EventKind
    actor: str
    model: str | None
    prompt: str | None
    version: int | None
    payload: dict[str, Any]

    @property
    def key(self) -> str | None:
        """The version key the event is about, when it is about one model version."""
        if self.model is None or self.version is None:
            return None
        return version_key(self.model, self.version)
