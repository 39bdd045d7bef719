"""Turn instances into requests according to an adapter spec."""

from __future__ import annotations

import random
from collections.abc import Sequence

from assay.adapters.spec import AdapterSpec, Method
from assay.digests import seed_from
from assay.records import Instance, Request, RequestKind


def _answer_text(instance: Instance) -> str:
    golds = instance.gold_texts
    if not golds:
        raise ValueError(f"train instance {instance.id!r} has no correct reference")
    return golds[0]


def _example(spec: AdapterSpec, instance: Instance) -> str:
    return (
        f"{spec.input_prefix}{instance.input}{spec.input_suffix}"
        f"{spec.output_prefix} {_answer_text(instance)}{spec.output_suffix}"
    )


def select_train_examples(train: Sequence[Instance], num_train: int, trial: int) -> list[Instance]:
    """Few-shot examples for one trial, seeded from the trial index (same every run)."""
    if num_train <= 0 or not train:
        return []
    rng = random.Random(seed_from("few-shot", trial))
    return rng.sample(list(train), min(num_train, len(train)))


def render_prompt(spec: AdapterSpec, instance: Instance, examples: Sequence[Instance]) -> str:
    """The exact prompt text: instructions, examples, then the instance up to the answer."""
    parts = []
    if spec.instructions:
        parts.append(spec.instructions + spec.instance_separator)
    for example in examples:
        parts.append(_example(spec, example) + spec.instance_separator)
    parts.append(f"{spec.input_prefix}{instance.input}{spec.input_suffix}{spec.output_prefix}")
    return "".join(parts)


def build_requests(
    spec: AdapterSpec,
    instances: Sequence[Instance],
    train: Sequence[Instance] = (),
    perturbation: str = "",
) -> list[Request]:
    """One request per eval instance and trial."""
    requests = []
    for trial in range(spec.num_trials):
        examples = select_train_examples(train, spec.num_train, trial)
        for instance in instances:
            prompt = render_prompt(spec, instance, examples)
            if spec.method is Method.GENERATION:
                request = Request(
                    instance_id=instance.id,
                    kind=RequestKind.GENERATE,
                    prompt=prompt,
                    max_tokens=spec.max_tokens,
                    stop=spec.stop,
                    template_id=spec.template_id,
                    trial=trial,
                    perturbation=perturbation,
                )
            else:
                if not instance.references:
                    raise ValueError(f"instance {instance.id!r} has no choices")
                request = Request(
                    instance_id=instance.id,
                    kind=RequestKind.LOGLIKELIHOOD,
                    prompt=prompt,
                    continuations=tuple(" " + ref.text for ref in instance.references),
                    template_id=spec.template_id,
                    trial=trial,
                    perturbation=perturbation,
                )
            requests.append(request)
    return requests
