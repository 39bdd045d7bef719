"""The suite's ``contamination:`` block: which checks run and which detectors flag.

::

    contamination:
      enabled: true          # default true: overlap checks whenever a version declares corpora
      model_based: false     # default false: Min-K% Prob when a version declares no corpus
      guided: false          # default false: guided vs general completion too (generates text)
      flag_detectors: [gpt3_13gram, palm_8gram, llama2_span]   # the default
      min_k: 0.2             # Min-K% Prob's k
      alpha: 0.05            # significance level of the model-based tests

Overlap checks cost an index lookup and no model call, so they run whenever a manifest
exists. The model-based detectors cost model calls (log-probabilities through the request
cache; generation for guided completion), so they run only when the suite asks for them, and
only for versions that declare no corpus. ``flag_detectors`` decides which detectors' flags
make an instance contaminated (the clean subset leaves those out).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from assay.contamination.table import KNOWN_DETECTORS, OVERLAP_DETECTORS


class ContaminationConfig(BaseModel):
    """The suite's ``contamination`` mapping (module docstring); absent means the defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    enabled: bool = True
    model_based: bool = False
    guided: bool = False
    flag_detectors: tuple[str, ...] = OVERLAP_DETECTORS
    min_k: float = Field(default=0.2, gt=0.0, le=1.0)
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)

    @field_validator("flag_detectors", mode="before")
    @classmethod
    def _known(cls, value: object) -> object:
        if isinstance(value, list):
            value = tuple(value)
        if isinstance(value, tuple):
            for i, name in enumerate(value):
                if name not in KNOWN_DETECTORS:
                    raise ValueError(
                        f"item {i} is {name!r}, not a detector ({', '.join(KNOWN_DETECTORS)})"
                    )
            if not value:
                raise ValueError("name at least one detector")
        return value

    @model_validator(mode="after")
    def _guided_needs_model_based(self) -> ContaminationConfig:
        if self.guided and not self.model_based:
            raise ValueError("guided: true needs model_based: true (it is a model-based check)")
        return self

    @property
    def runs_overlap(self) -> bool:
        return self.enabled

    @property
    def runs_membership(self) -> bool:
        return self.enabled and self.model_based
