"""IFEval (Zhou et al. 2023): prompts with verifiable instructions ("answer in fewer than 300
words", "no commas", "wrap the answer in JSON").

One instance per row of the authors' file (fields ``key``, ``prompt``, ``instruction_id_list``,
``kwargs``), read by default from their repository (``google-research/google-research``,
``instruction_following_eval/data/input_data.jsonl``, pinned to a commit). The Hugging Face
dataset ``google/IFEval`` (split ``train``, the one lm-evaluation-harness's ``ifeval`` task
reads) publishes the same rows and fields; ``data_files`` reads it or any copy. The prompt is
the input, and the one correct reference is the row's instructions as JSON
(:func:`instruction_spec`), which the ``ifeval`` scorer (``assay.scoring.ifeval``) checks the
answer against. Reference matching means nothing here: a suite entry names the scorer::

      ifeval:
        scenario: ifeval
        adapter: {method: generation, max_tokens: 1280}
        scorer: ifeval
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

from assay.core.records import Instance, Reference
from assay.scenarios.base import register_scenario
from assay.scenarios.public import GITHUB, PublicDataset


def instruction_spec(key: int, instruction_id_list: Sequence[str], kwargs: Sequence[Any]) -> str:
    """The reference text of an IFEval instance: its row's instruction fields as JSON.

    Checks the shapes (a ``ValueError`` naming the field): an integer key, a non-empty list of
    instruction ids and one mapping of arguments per instruction.
    """
    if isinstance(key, bool) or not isinstance(key, int):
        raise ValueError(f"field 'key': expected an integer, got {key!r}")
    ids = list(instruction_id_list) if isinstance(instruction_id_list, list | tuple) else None
    if not ids or not all(isinstance(i, str) and i for i in ids):
        raise ValueError(
            "field 'instruction_id_list': expected a non-empty list of instruction ids, got "
            f"{instruction_id_list!r}"
        )
    if not isinstance(kwargs, list | tuple) or len(kwargs) != len(ids):
        raise ValueError(
            f"field 'kwargs': expected a list of {len(ids)} mappings (one per instruction), "
            f"got {kwargs!r}"
        )
    for index, arguments in enumerate(kwargs):
        if not isinstance(arguments, Mapping) or not all(isinstance(k, str) for k in arguments):
            raise ValueError(f"field 'kwargs[{index}]': expected a mapping, got {arguments!r}")
    spec = {"key": key, "instruction_id_list": ids, "kwargs": [dict(a) for a in kwargs]}
    return json.dumps(spec, sort_keys=True, ensure_ascii=False)


@register_scenario("ifeval")
class IFEvalPrompts(PublicDataset):
    """IFEval's 541 prompts (see the module doc); ``data_files={"test": ...}`` reads a copy.

    Pinned to a commit of the authors' repository; the file's SHA-256 is not recorded (its
    bytes at that commit could not be read when the pin was set): pass ``sha256`` to check it.
    """

    repo = "google-research/google-research"
    url_template = GITHUB
    default_revision = "19638399cc9e03623c5b9087a1d6fa8813974ce9"
    files: ClassVar[dict[str, str]] = {"test": "instruction_following_eval/data/input_data.jsonl"}

    def convert(self, row: dict[str, Any], split: str, number: int) -> Iterator[Instance]:
        prompt = row["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"field 'prompt': expected a non-empty text, got {prompt!r}")
        spec = instruction_spec(row["key"], row["instruction_id_list"], row["kwargs"])
        yield Instance(
            id=str(row["key"]),
            input=prompt,
            references=(Reference(spec, True),),
            split=split,
        )
