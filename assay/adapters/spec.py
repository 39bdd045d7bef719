"""The adapter spec: how instances become prompts (the fields HELM users know).

A prompt is laid out as::

    {global_prefix}{instructions}{instance_separator}
    {input_prefix}{example}{input_suffix}[choices]{output_prefix}{answer_separator}{answer}
    {output_suffix}{instance_separator} ... (one block per few-shot example)
    {input_prefix}{input}{input_suffix}[choices]{output_prefix}{global_suffix}

``[choices]`` is one ``{reference_prefix}{text}{reference_suffix}`` line per reference, only
for ``multiple_choice_joint``.

Chat templates are not applied here: whether a prompt is wrapped as a chat turn is a property
of the model version (``ServingConfig.chat_template``) and the model client applies it, so one
suite runs unchanged against base and instruction-tuned versions, and the prompt digest
recorded with each request is the text before any chat wrapping.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from assay.core.digests import digest_json


class Method(enum.StrEnum):
    """How a model is asked about an instance."""

    GENERATION = "generation"  # the model writes the answer; scored against the references
    # Choices lettered A., B., … in the prompt; the model generates the letter.
    MULTIPLE_CHOICE_JOINT = "multiple_choice_joint"
    MULTIPLE_CHOICE_SEPARATE = "multiple_choice_separate"  # log-likelihood of each choice
    # Each choice's log-likelihood minus its log-likelihood given only the output prefix.
    MULTIPLE_CHOICE_CALIBRATED = "multiple_choice_calibrated"
    # Log-likelihood of a whole document over sliding windows: perplexity, bits per byte.
    LANGUAGE_MODELING = "language_modeling"


FEW_SHOT_SCHEMES = ("assay", "helm")

LOGLIKELIHOOD_METHODS = frozenset(
    {
        Method.MULTIPLE_CHOICE_SEPARATE,
        Method.MULTIPLE_CHOICE_CALIBRATED,
        Method.LANGUAGE_MODELING,
    }
)


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
    global_prefix: str = ""  # before everything, e.g. a fixed preamble
    # Choice lines of multiple_choice_joint: the first "A" of reference_prefix becomes the
    # choice's letter (HELM's convention), so "A. " gives "A. ", "B. ", …
    reference_prefix: str = "A. "
    reference_suffix: str = "\n"
    num_train: int = 0  # few-shot examples per prompt, sampled from the train split
    num_trials: int = 1  # independent few-shot samples (each a trial)
    sample_train: bool = True  # class-balanced random sample; False takes them in order
    max_tokens: int = 16
    stop: tuple[str, ...] = ("\n",)
    # Character budget of a prompt (plus its longest continuation); 0 means unlimited. Over
    # budget, few-shot examples are dropped from the end, then the input loses its start.
    max_prompt_chars: int = 0
    # language_modeling: each request scores a window of this many characters of the
    # document, given up to lm_context_chars characters that precede it.
    lm_window_chars: int = 1000
    lm_context_chars: int = 1000
    variant: str = "default"  # a name for this layout, e.g. "zero-shot", "5-shot", "terse"
    extra: dict[str, Any] = field(default_factory=dict)
    # Between a few-shot example's output prefix and its answer. HELM writes its output prefix
    # whole before an answer ("Answer: C") and right-stripped at the end of the prompt
    # ("Answer:"): its "Answer: " is output_prefix "Answer:" with answer_separator " ".
    answer_separator: str = " "
    global_suffix: str = ""  # after everything, e.g. a fixed cue after the last instance
    # How few-shot examples are drawn: "assay" (see ``select_train_examples``) or "helm"
    # (HELM's own sampler, so the examples and their order are the ones helm-run picks).
    few_shot_scheme: str = "assay"
    # A prompt-registry reference (``prompts:/name@alias`` or ``prompts:/name/3``) whose
    # template lays out the input, declaring the one variable ``input``; it is resolved into
    # ``input_prefix``/``input_suffix`` when a partition is evaluated. ``instructions`` may
    # be such a reference too (a template without variables). See
    # ``assay.evaluate.registry_prompts``.
    input_template: str = ""
    # Decoding of generated answers. temperature 0 is greedy (the default); above 0 each
    # instance gets num_samples sampled completions (HELM's num_outputs), each a request of its
    # own with a seed derived from ``seed``, the request's digest and the sample index
    # (``assay.core.digests.sample_seed``): the same suite gives the same samples on every
    # run, whether a request runs alone or in a batch, and each sample is cached on its own.
    temperature: float = 0.0
    top_p: float = 1.0
    num_samples: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.few_shot_scheme not in FEW_SHOT_SCHEMES:
            raise ValueError(
                f"adapter: unknown few_shot_scheme {self.few_shot_scheme!r}; "
                f"known: {', '.join(FEW_SHOT_SCHEMES)}"
            )
        if self.num_train < 0 or self.num_trials < 1:
            raise ValueError("adapter: num_train must be >= 0 and num_trials >= 1")
        if self.max_prompt_chars < 0:
            raise ValueError("adapter: max_prompt_chars must be >= 0 (0 means unlimited)")
        if self.lm_window_chars < 1 or self.lm_context_chars < 0:
            raise ValueError("adapter: lm_window_chars must be >= 1 and lm_context_chars >= 0")
        if not (self.temperature >= 0 and self.temperature <= 100):  # NaN fails too
            raise ValueError(f"adapter: temperature must be in [0, 100], got {self.temperature}")
        if not (0 < self.top_p <= 1):
            raise ValueError(f"adapter: top_p must be in (0, 1], got {self.top_p}")
        if self.num_samples < 1:
            raise ValueError(f"adapter: num_samples must be >= 1, got {self.num_samples}")
        if self.seed < 0:
            raise ValueError(f"adapter: seed must be >= 0, got {self.seed}")
        if self.num_samples > 1 and self.temperature == 0:
            raise ValueError(
                "adapter: num_samples > 1 needs temperature > 0 (greedy decoding gives the "
                "same completion every time)"
            )
        if (self.temperature > 0 or self.num_samples > 1) and self.method in LOGLIKELIHOOD_METHODS:
            raise ValueError(
                f"adapter: temperature and num_samples apply to generated answers; method "
                f"{self.method.value!r} scores log-likelihoods and samples nothing"
            )

    @property
    def template_id(self) -> str:
        """A stable, readable id: the variant name plus a digest of every field."""
        return f"{self.variant}-{digest_json(self.to_dict())[:10]}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["method"] = self.method.value
        data["stop"] = list(self.stop)
        # Fields added after template ids were first stored are left out at their defaults,
        # so every layout that existed before keeps its template id (and its history).
        for name, default in _LATER_FIELDS.items():
            if data[name] == default:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "adapter") -> AdapterSpec:
        """Build from a suite-file mapping; unknown keys are an error naming ``where``."""
        return cls().override(data, where)

    def override(self, data: dict[str, Any], where: str = "adapter") -> AdapterSpec:
        """A copy with the fields in ``data`` replaced (a prompt variant over a base spec)."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a mapping of adapter fields")
        known = {f.name: f for f in fields(self)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"{where}: unknown adapter field(s): {', '.join(unknown)}")
        values = dict(data)
        if "method" in values:
            try:
                values["method"] = Method(values["method"])
            except ValueError:
                choices = ", ".join(m.value for m in Method)
                raise ValueError(
                    f"{where}: unknown method {values['method']!r}; known: {choices}"
                ) from None
        if "stop" in values:
            if isinstance(values["stop"], str) or not all(
                isinstance(s, str) for s in values["stop"]
            ):
                raise ValueError(f"{where}.stop: expected a list of strings")
            values["stop"] = tuple(values["stop"])
        for name in _FLOAT_FIELDS & set(values):
            # A YAML `1` is a fine temperature; a `true` is not.
            if isinstance(values[name], int) and not isinstance(values[name], bool):
                values[name] = float(values[name])
        for name, value in values.items():
            expected = _FIELD_TYPES.get(name)
            # bool is an int subclass; a YAML `true` must not pass as a count.
            if expected is not None and (
                not isinstance(value, expected) or (expected is int and isinstance(value, bool))
            ):
                raise ValueError(
                    f"{where}.{name}: expected {expected.__name__}, got {type(value).__name__}"
                )
        try:
            return replace(self, **values)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None


_FIELD_TYPES: dict[str, type] = {
    **{
        name: str
        for name in (
            "instructions",
            "input_prefix",
            "input_suffix",
            "output_prefix",
            "output_suffix",
            "instance_separator",
            "global_prefix",
            "reference_prefix",
            "reference_suffix",
            "variant",
            "answer_separator",
            "global_suffix",
            "few_shot_scheme",
            "input_template",
        )
    },
    **{
        name: int
        for name in (
            "num_train",
            "num_trials",
            "max_tokens",
            "max_prompt_chars",
            "lm_window_chars",
            "lm_context_chars",
            "num_samples",
            "seed",
        )
    },
    "temperature": float,
    "top_p": float,
    "sample_train": bool,
    "extra": dict,
}

# Field → default of the fields ``to_dict`` leaves out at their default (see there).
_LATER_FIELDS: dict[str, Any] = {
    "answer_separator": " ",
    "global_suffix": "",
    "few_shot_scheme": "assay",
    "input_template": "",
    "temperature": 0.0,
    "top_p": 1.0,
    "num_samples": 1,
    "seed": 0,
}
_FLOAT_FIELDS = frozenset({"temperature", "top_p"})
