"""Prompt trials: the suite entries that read a prompt alias, evaluated with one pinned version
of the prompt in its place and stored apart from the evaluation.

A gated prompt-alias move is judged on trials of both sides, on the same model versions: the
candidate prompt version and the version the alias held. Both are produced by the same code
(``assay.evaluate.partition.run_partition`` and the suite's scorer) with the alias pinned to
the version on trial, so the decision compares like with like, and the evaluation's own
tables (keyed by model version × scenario) are never written by a trial. The incumbent's
requests are those of the alias's last evaluation, so its trial is answered by the request
cache.

A trial's tables (``model_outputs``, ``instance_scores``, ``metric_tables``, laid out as the
evaluation's) lie under ``prompt_trials/<prompt>@v<N>/<suite identity>/`` in the store,
where the identity digest covers the suite file, the evaluation code versions and the trial's
own code version: a trial written for another suite or other code lies elsewhere, so a trial
that is present is current.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from assay.core.digests import digest_json
from assay.evaluate.registry_prompts import (
    PROMPT_FIELDS,
    is_prompt_reference,
    reads_rubric_alias,
    uses_prompt_alias,
)
from assay.evaluate.suite import ScenarioConfig, Suite
from assay.registry.errors import RegistryError
from assay.registry.gating import SuiteIdentity
from assay.registry.names import parse_reference
from assay.storage.code_versions import code_version
from assay.storage.contract import PROMPT_TRIALS
from assay.storage.parquet import ParquetStore

# Run tags of a trial run: the prompt version on trial and the alias it stands in for.
PROMPT_TRIAL_TAG = "assay/prompt_trial"
PROMPT_ALIAS_TAG = "assay/prompt_alias"
TRIAL_MODEL_TAG = "assay/trial_model_version"


@dataclass(frozen=True, slots=True)
class PromptTrial:
    """Version ``version`` of prompt ``prompt`` read where the suite reads ``alias``."""

    prompt: str
    alias: str
    version: int

    @property
    def key(self) -> str:
        return f"{self.prompt}@v{self.version}"

    @classmethod
    def of(cls, key: str, alias: str) -> PromptTrial:
        """From a prompt version key (``terse@v2``) and the alias it stands in for."""
        name, sep, number = key.rpartition("@v")
        if not sep or not name or not number.isdigit():
            raise ValueError(f"{key!r} is not a prompt version key like 'name@v2'")
        return cls(name, alias, int(number))

    def tags(self, model_version: str) -> dict[str, str]:
        """The run tags of this trial on ``model_version``."""
        return {
            PROMPT_TRIAL_TAG: self.key,
            PROMPT_ALIAS_TAG: self.alias,
            TRIAL_MODEL_TAG: model_version,
        }

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> PromptTrial:
        """The trial a run's tags name; a ValueError naming the missing tag otherwise."""
        for tag in (PROMPT_TRIAL_TAG, PROMPT_ALIAS_TAG):
            if not tags.get(tag):
                raise ValueError(
                    f"a {PROMPT_TRIALS} run needs the run tag {tag!r} (the promotion sensor "
                    "sets it when a prompt promotion is pending)"
                )
        return cls.of(tags[PROMPT_TRIAL_TAG], tags[PROMPT_ALIAS_TAG])


def entries_reading(suite: Suite, prompt: str, alias: str) -> list[str]:
    """The suite keys whose layouts or judge rubrics read ``prompt`` through ``alias``."""
    return [
        key
        for key, config in suite.scenarios.items()
        if uses_prompt_alias(config, prompt, alias)
        or reads_rubric_alias(config, suite, prompt, alias)
    ]


def _pinned(value: str | None, trial: PromptTrial) -> str | None:
    if value is None or not is_prompt_reference(value):
        return value
    try:
        ref = parse_reference(value, "prompts")
    except RegistryError:
        return value  # not a reference this trial pins; the suite's checks report it
    if ref.name == trial.prompt and ref.alias == trial.alias:
        return f"prompts:/{trial.prompt}/{trial.version}"
    return value


def _pinned_config(config: ScenarioConfig, trial: PromptTrial) -> ScenarioConfig:
    adapters = [
        replace(a, **{f: _pinned(getattr(a, f), trial) for f in PROMPT_FIELDS})
        for a in config.adapters
    ]
    judging = config.judging
    if judging is not None:
        judging = replace(judging, rubric=_pinned(judging.rubric, trial))
    return replace(config, adapter=adapters[0], variants=tuple(adapters[1:]), judging=judging)


def pin_prompt_alias(suite: Suite, trial: PromptTrial) -> Suite:
    """The suite with every ``prompts:/<prompt>@<alias>`` (layouts and rubrics) read as
    ``prompts:/<prompt>/<version>``; entry digests are kept (they name the entries as
    written)."""
    toxicity = suite.toxicity
    if toxicity is not None and toxicity.rubric:
        toxicity = toxicity.model_copy(update={"rubric": _pinned(toxicity.rubric, trial)})
    scenarios = {k: _pinned_config(c, trial) for k, c in suite.scenarios.items()}
    return replace(suite, scenarios=scenarios, toxicity=toxicity)


def trial_store(store: ParquetStore, trial: PromptTrial, identity: SuiteIdentity) -> ParquetStore:
    """Where ``trial``'s tables lie for the suite and code ``identity`` names (see the module
    doc); the evaluation's layout, without history."""
    digest = digest_json([identity.to_json(), code_version(PROMPT_TRIALS)])[:16]
    return ParquetStore(f"{store.base_url}/{PROMPT_TRIALS}/{trial.key}/{digest}", history_assets=())


__all__ = (
    "PROMPT_ALIAS_TAG",
    "PROMPT_TRIALS",
    "PROMPT_TRIAL_TAG",
    "TRIAL_MODEL_TAG",
    "PromptTrial",
    "entries_reading",
    "pin_prompt_alias",
    "trial_store",
)
