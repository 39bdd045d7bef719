"""The adapter spec: how instances become prompts (the fields HELM users know)."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

from assay.digests import digest_json


class Method(enum.StrEnum):
    """How a model is asked about an instance."""

    GENERATION = "generation"  # the model writes the answer; scored against the references
    MULTIPLE_CHOICE_SEPARATE = "multiple_choice_separate"  # log-likelihood of each choice


@dataclass(frozen=True, slots=True)
class AdapterSpec:
    """Prompt layout and decoding settings; its digest is the template id of every request."""

    method: Method = Method.GENERATION
    instructions: str = ""
    input_prefix: str = "Question: "
    input_suffix: str = "\n"
    output_prefix: str = "Answer:"
    output_suffix: str = "\n"
    instance_separator: str = "\n"
    num_train: int = 0  # few-shot examples per prompt, sampled from the train split
    num_trials: int = 1  # independent few-shot samples (each a trial)
    max_tokens: int = 16
    stop: tuple[str, ...] = ("\n",)
    variant: str = "default"  # a name for this layout, e.g. "zero-shot", "5-shot", "terse"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def template_id(self) -> str:
        """A stable, readable id: the variant name plus a digest of every field."""
        return f"{self.variant}-{digest_json(self.to_dict())[:10]}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["method"] = self.method.value
        data["stop"] = list(self.stop)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "adapter") -> AdapterSpec:
        """Build from a suite-file mapping; unknown keys are an error naming ``where``."""
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"{where}: unknown adapter field(s): {', '.join(unknown)}")
        values = dict(data)
        if "method" in values:
            try:
                values["method"] = Method(values["method"])
            except ValueError:
                known = ", ".join(m.value for m in Method)
                raise ValueError(
                    f"{where}: unknown method {values['method']!r}; known: {known}"
                ) from None
        if "stop" in values:
            values["stop"] = tuple(values["stop"])
        return cls(**values)
