"""HELM's prompt conventions in assay's terms: its adapter spec and its few-shot sampler.

HELM (``helm.benchmark.adaptation``) joins the instructions, the few-shot blocks and the eval
block with ``instance_prefix``; a block is ``input_prefix + input + input_suffix``, then for
``multiple_choice_joint`` one ``reference_prefix + text + reference_suffix`` per reference
(the prefix's first letter or digit stepped per choice), then ``output_prefix + answer +
output_suffix`` for an example or ``output_prefix`` right-stripped for the eval instance.
``from_helm_adapter_spec`` expresses that in assay's ``AdapterSpec`` so that ``build_requests``
renders the same bytes, and ``few_shot_scheme="helm"`` picks the same few-shot examples
(``helm_train_examples``). Nothing here imports HELM.
"""

from __future__ import annotations

import dataclasses
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from assay.adapters.spec import AdapterSpec, Method
from assay.core.records import Instance

# HELM's AdapterSpec defaults (crfm-helm 0.5) for the fields read here; a mapping such as a
# run_spec.json's "adapter_spec" may leave these out. tests/test_helm_bridge.py checks them
# against the installed HELM.
HELM_ADAPTER_DEFAULTS: dict[str, Any] = {
    "method": "",
    "global_prefix": "",
    "global_suffix": "",
    "instructions": "",
    "input_prefix": "Input: ",
    "input_suffix": "\n",
    "reference_prefix": "A. ",
    "reference_prefix_characters": None,
    "reference_suffix": "\n",
    "output_prefix": "Output: ",
    "output_suffix": "\n",
    "instance_prefix": "\n",
    "substitutions": [],
    "max_train_instances": 5,
    "num_train_trials": 1,
    "sample_train": True,
    "max_tokens": 100,
    "stop_sequences": [],
    "multi_label": False,
}

# HELM adaptation method → assay method, for the methods whose prompts assay reproduces.
HELM_METHODS: dict[str, Method] = {
    "generation": Method.GENERATION,
    "multiple_choice_joint": Method.MULTIPLE_CHOICE_JOINT,
}


def from_helm_adapter_spec(
    helm_spec: Mapping[str, Any] | Any, variant: str = "helm", where: str = "HELM adapter_spec"
) -> AdapterSpec:
    """The assay spec that renders the prompts HELM renders for ``helm_spec``.

    ``helm_spec`` is a HELM ``AdapterSpec`` or its dict form (``run_spec.json``); missing keys
    take HELM's defaults. Settings that change HELM's prompt and have no assay equivalent
    (other methods, substitutions, custom choice characters, multi-label answers) are an
    error naming the field. Left out because they do not change the prompt text: decoding
    settings (temperature, num_outputs, num_trials, random; set ``temperature``, ``top_p``,
    ``num_samples`` and ``seed`` on the assay adapter to sample, since HELM's defaults of
    temperature 1 and five outputs would turn every bridged greedy run into a sampled one),
    the instance budget (max_eval_instances, eval_splits: the suite's business),
    model names and ``output_mapping_pattern``. HELM fits prompts to the model's token window;
    the spec here has no character budget, so parity holds for prompts that fit.
    """
    given = dataclasses.asdict(helm_spec) if dataclasses.is_dataclass(helm_spec) else helm_spec
    if not isinstance(given, Mapping):
        raise ValueError(f"{where}: expected a HELM AdapterSpec or a mapping of its fields")
    data = {**HELM_ADAPTER_DEFAULTS, **given}
    method = HELM_METHODS.get(data["method"])
    if method is None:
        raise ValueError(
            f"{where}.method: {data['method']!r} is not supported; "
            f"supported: {', '.join(HELM_METHODS)}"
        )
    for name in ("substitutions", "reference_prefix_characters", "multi_label"):
        if data[name]:
            raise ValueError(f"{where}.{name}: {data[name]!r} is not supported (prompts differ)")
    if method is Method.MULTIPLE_CHOICE_JOINT:
        _check_reference_prefix(data["reference_prefix"], where)
    output_prefix = data["output_prefix"]
    stripped = output_prefix.rstrip()
    return AdapterSpec(
        method=method,
        instructions=data["instructions"],
        input_prefix=data["input_prefix"],
        input_suffix=data["input_suffix"],
        output_prefix=stripped,
        answer_separator=output_prefix[len(stripped) :],
        output_suffix=data["output_suffix"],
        instance_separator=data["instance_prefix"],
        global_prefix=data["global_prefix"],
        global_suffix=data["global_suffix"],
        reference_prefix=data["reference_prefix"],
        reference_suffix=data["reference_suffix"],
        num_train=data["max_train_instances"],
        num_trials=data["num_train_trials"],
        sample_train=data["sample_train"],
        few_shot_scheme="helm",
        max_tokens=data["max_tokens"],
        # HELM's joint adapter sends no stop sequences whatever the spec says.
        stop=() if method is Method.MULTIPLE_CHOICE_JOINT else tuple(data["stop_sequences"]),
        variant=variant,
    )


def _check_reference_prefix(prefix: str, where: str) -> None:
    # HELM steps the prefix's first letter or digit for each choice and replaces every
    # occurrence of it; assay letters choices A, B, C… in place of the prefix's first "A".
    marks = [char for char in prefix if char.isalnum()]
    if not marks or marks[0] != "A" or prefix.count("A") != 1:
        raise ValueError(
            f"{where}.reference_prefix: {prefix!r} is not supported; its first letter or "
            "digit must be its only 'A' (as in 'A. ' or '(A) ')"
        )


def helm_train_examples(
    train: Sequence[Instance], num_train: int, trial: int, sample_train: bool = True
) -> list[Instance]:
    """HELM's few-shot examples for one trial: the same instances, in the same order.

    HELM seeds Python's ``random`` with the trial index; examples are grouped by the text of
    their first correct reference; labels are ordered by how many examples they have, most
    first, ties in sorted order shuffled; one random unused example per label is taken
    round-robin; examples without a correct reference fill what is left. Without sampling
    it takes the trial's consecutive block of the train split (fewer when the split runs out).
    Unlike HELM this never loops forever when labelled examples run out before unlabelled
    ones are needed; where HELM returns, the result is the same.
    """
    if num_train <= 0 or not train:
        return []
    rng = random.Random(trial)  # the generator HELM's ``random.seed(trial)`` sets up
    remaining = min(len(train), num_train)
    if not sample_train:
        return list(train[remaining * trial : remaining * (trial + 1)])
    by_label: dict[str, list[Instance]] = defaultdict(list)
    unlabeled: list[Instance] = []
    for instance in train:
        golds = instance.gold_texts
        (by_label[golds[0]] if golds else unlabeled).append(instance)
    by_count: dict[int, list[str]] = defaultdict(list)
    for label in sorted(by_label):
        by_count[len(by_label[label])].append(label)
    order: list[str] = []
    for count in sorted(by_count, reverse=True):
        rng.shuffle(by_count[count])
        order.extend(by_count[count])
    chosen: list[Instance] = []
    left = sum(len(group) for group in by_label.values())
    position = 0
    while remaining > 0 and order and left > 0:
        label = order[position % len(order)]
        position += 1
        if not label:
            break  # HELM stops at an empty label text
        group = by_label[label]
        if group:
            chosen.append(group.pop(rng.randrange(len(group))))
            remaining -= 1
            left -= 1
    chosen += rng.sample(unlabeled, min(remaining, len(unlabeled)))
    return chosen
