"""Turn instances into requests according to an adapter spec.

One function per adapter method; ``build_requests`` dispatches. Every request carries the
spec's template id, the trial, the adapter method and, for methods that send several requests
per instance, its part ("unconditioned" for calibration, "window-<i>" for language modeling).
The model client applies a chat template when the model version's serving config asks for one
(see ``assay.adapters.spec``); prompts here are plain text.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

from assay.adapters.helm_prompts import helm_train_examples
from assay.adapters.spec import AdapterSpec, Method
from assay.core.digests import sample_seed, seed_from
from assay.core.records import Instance, Request, RequestKind

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
UNCONDITIONED = "unconditioned"


def choice_label(index: int) -> str:
    """The letter of the ``index``-th choice in a joint multiple-choice prompt."""
    if not 0 <= index < len(LETTERS):
        raise ValueError(f"multiple_choice_joint supports at most {len(LETTERS)} choices")
    return LETTERS[index]


def joint_answer_map(instance: Instance) -> dict[str, int]:
    """Letter → reference index, as laid out in the prompt: reference ``i`` is letter ``i``.

    The references keep the instance's order, so the mapping is a function of the stored
    instance and scoring recomputes it instead of storing it per request.
    """
    return {choice_label(i): i for i in range(len(instance.references))}


def _answer_text(spec: AdapterSpec, instance: Instance) -> str:
    correct = instance.correct_indices
    if not correct:
        raise ValueError(f"train instance {instance.id!r} has no correct reference")
    if spec.method is Method.MULTIPLE_CHOICE_JOINT:
        return choice_label(correct[0])
    return instance.references[correct[0]].text


def _choices_block(spec: AdapterSpec, instance: Instance) -> str:
    if spec.method is not Method.MULTIPLE_CHOICE_JOINT:
        return ""
    if not instance.references:
        raise ValueError(f"instance {instance.id!r} has no choices")
    return "".join(
        spec.reference_prefix.replace("A", choice_label(i), 1) + ref.text + spec.reference_suffix
        for i, ref in enumerate(instance.references)
    )


def _query(spec: AdapterSpec, instance: Instance, text: str) -> str:
    return (
        f"{spec.input_prefix}{text}{spec.input_suffix}"
        f"{_choices_block(spec, instance)}{spec.output_prefix}"
    )


def _example(spec: AdapterSpec, instance: Instance) -> str:
    answer = _answer_text(spec, instance)
    return (
        f"{_query(spec, instance, instance.input)}{spec.answer_separator}{answer}"
        f"{spec.output_suffix}"
    )


def select_train_examples(
    train: Sequence[Instance],
    num_train: int,
    trial: int,
    balanced: bool = True,
    scheme: str = "assay",
) -> list[Instance]:
    """Few-shot examples for one trial, seeded from the trial index (same every run).

    Balanced sampling (HELM's scheme): examples are grouped by their first correct answer;
    labels are visited round-robin, the most frequent first (ties in a seeded random order),
    taking a random unused example of each, so a 4-shot prompt over yes/no data holds two of
    each where it can. Examples without a correct answer only fill what is left. Unbalanced
    (``balanced=False``) takes consecutive blocks of the train split, one block per trial.
    ``scheme="helm"`` draws exactly the examples HELM draws instead (``helm_train_examples``).
    """
    if scheme == "helm":
        return helm_train_examples(train, num_train, trial, balanced)
    if num_train <= 0 or not train:
        return []
    pool = list(train)
    count = min(num_train, len(pool))
    if not balanced:
        start = (count * trial) % len(pool)
        return (pool + pool)[start : start + count]
    rng = random.Random(seed_from("few-shot", trial))
    by_label: dict[str, list[Instance]] = defaultdict(list)
    unlabeled: list[Instance] = []
    for instance in pool:
        golds = instance.gold_texts
        (by_label[golds[0]] if golds else unlabeled).append(instance)
    labels = sorted(by_label)
    rng.shuffle(labels)
    labels.sort(key=lambda label: len(by_label[label]), reverse=True)  # stable: ties stay shuffled
    remaining = {label: list(by_label[label]) for label in labels}
    chosen: list[Instance] = []
    while len(chosen) < count and any(remaining.values()):
        for label in labels:
            if len(chosen) == count:
                break
            if remaining[label]:
                chosen.append(remaining[label].pop(rng.randrange(len(remaining[label]))))
    if len(chosen) < count:
        chosen += rng.sample(unlabeled, count - len(chosen))
    return chosen


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    """A prompt and what was cut to fit the character budget."""

    text: str
    num_examples: int  # few-shot examples kept
    examples_dropped: int  # few-shot examples left out to fit
    input_chars_cut: int  # characters removed from the start of the input

    @property
    def truncated(self) -> bool:
        return self.examples_dropped > 0 or self.input_chars_cut > 0


def _assemble(spec: AdapterSpec, examples: Sequence[Instance], query: str) -> str:
    parts = [spec.global_prefix]
    if spec.instructions:
        parts.append(spec.instructions + spec.instance_separator)
    parts.extend(_example(spec, example) + spec.instance_separator for example in examples)
    parts.append(query)
    parts.append(spec.global_suffix)
    return "".join(parts)


def fit_prompt(
    spec: AdapterSpec,
    instance: Instance,
    examples: Sequence[Instance],
    reserve_chars: int = 0,
) -> RenderedPrompt:
    """Render within ``spec.max_prompt_chars`` (minus ``reserve_chars`` for the answer).

    Few-shot examples are dropped from the end first; then the input loses characters from
    its start, because the question usually sits at its end, next to the answer.
    """
    kept = list(examples)
    text = _assemble(spec, kept, _query(spec, instance, instance.input))
    if spec.max_prompt_chars <= 0:
        return RenderedPrompt(text, len(kept), 0, 0)
    budget = spec.max_prompt_chars - reserve_chars
    while len(text) > budget and kept:
        kept.pop()
        text = _assemble(spec, kept, _query(spec, instance, instance.input))
    dropped = len(examples) - len(kept)
    excess = len(text) - budget
    if excess <= 0:
        return RenderedPrompt(text, len(kept), dropped, 0)
    if excess > len(instance.input):
        raise ValueError(
            f"instance {instance.id!r}: the prompt does not fit max_prompt_chars="
            f"{spec.max_prompt_chars} even with an empty input"
        )
    text = _assemble(spec, kept, _query(spec, instance, instance.input[excess:]))
    return RenderedPrompt(text, len(kept), dropped, excess)


def render_prompt(spec: AdapterSpec, instance: Instance, examples: Sequence[Instance]) -> str:
    """The exact prompt text: instructions, examples, then the instance up to the answer."""
    return fit_prompt(spec, instance, examples).text


def _continuations(instance: Instance) -> tuple[str, ...]:
    if not instance.references:
        raise ValueError(f"instance {instance.id!r} has no choices")
    return tuple(" " + ref.text for ref in instance.references)


def _instance_requests(
    spec: AdapterSpec,
    instance: Instance,
    examples: Sequence[Instance],
    trial: int,
    perturbation: str,
) -> list[Request]:
    common = {
        "instance_id": instance.id,
        "template_id": spec.template_id,
        "trial": trial,
        "perturbation": perturbation,
        "method": spec.method.value,
    }
    if spec.method in (Method.GENERATION, Method.MULTIPLE_CHOICE_JOINT):
        fitted = fit_prompt(spec, instance, examples)
        request = Request(
            kind=RequestKind.GENERATE,
            prompt=fitted.text,
            max_tokens=spec.max_tokens,
            stop=spec.stop,
            truncated=fitted.truncated,
            temperature=spec.temperature,
            top_p=spec.top_p,
            **common,
        )
        if not request.sampled:
            return [request]
        base = request.decoding_digest
        return [
            replace(request, sample=k, seed=sample_seed(spec.seed, base, k))
            for k in range(spec.num_samples)
        ]
    continuations = _continuations(instance)
    fitted = fit_prompt(spec, instance, examples, max(map(len, continuations)))
    requests = [
        Request(
            kind=RequestKind.LOGLIKELIHOOD,
            prompt=fitted.text,
            continuations=continuations,
            truncated=fitted.truncated,
            **common,
        )
    ]
    if spec.method is Method.MULTIPLE_CHOICE_CALIBRATED:
        # The choices' prior given only the answer cue, as in Zhao et al.'s calibration.
        requests.append(
            Request(
                kind=RequestKind.LOGLIKELIHOOD,
                prompt=spec.output_prefix,
                continuations=continuations,
                part=UNCONDITIONED,
                **common,
            )
        )
    return requests


def language_modeling_requests(
    spec: AdapterSpec, instance: Instance, trial: int = 0, perturbation: str = ""
) -> list[Request]:
    """Score a whole document: consecutive windows, each given the text just before it.

    Window ``i`` covers characters ``[i*W, (i+1)*W)`` of ``instance.input``; its prompt is
    the up to ``lm_context_chars`` characters before it (empty for the first window, which
    the client scores from the start-of-text token). Summing the windows' log-likelihoods
    scores every character exactly once.
    """
    text = instance.input
    if not text:
        raise ValueError(f"instance {instance.id!r}: language modeling needs a non-empty input")
    width, context = spec.lm_window_chars, spec.lm_context_chars
    requests = []
    for index, start in enumerate(range(0, len(text), width)):
        requests.append(
            Request(
                instance_id=instance.id,
                kind=RequestKind.LOGLIKELIHOOD,
                prompt=text[max(0, start - context) : start],
                continuations=(text[start : start + width],),
                template_id=spec.template_id,
                trial=trial,
                perturbation=perturbation,
                method=spec.method.value,
                part=f"window-{index}",
                truncated=start - context > 0,
            )
        )
    return requests


def build_requests(
    spec: AdapterSpec,
    instances: Sequence[Instance],
    train: Sequence[Instance] = (),
    perturbation: str = "",
) -> list[Request]:
    """The requests of every eval instance and trial, in trial-major order."""
    if spec.method is Method.LANGUAGE_MODELING:
        # A document's log-likelihood has no few-shot examples, so one trial is enough.
        return [r for i in instances for r in language_modeling_requests(spec, i, 0, perturbation)]
    requests = []
    for trial in range(spec.num_trials):
        examples = select_train_examples(
            train, spec.num_train, trial, spec.sample_train, spec.few_shot_scheme
        )
        for instance in instances:
            requests.extend(_instance_requests(spec, instance, examples, trial, perturbation))
    return requests


def build_variant_requests(
    specs: Sequence[AdapterSpec],
    instances: Sequence[Instance],
    train: Sequence[Instance] = (),
    perturbation: str = "",
) -> list[Request]:
    """Requests for several prompt variants at once; template ids keep them apart."""
    ids = [spec.template_id for spec in specs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"prompt variants share a template id: {ids}")
    return [r for spec in specs for r in build_requests(spec, instances, train, perturbation)]
