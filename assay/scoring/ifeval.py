"""IFEval (Zhou et al. 2023): does the answer follow the prompt's verifiable instructions?

A suite entry asks for it with ``scorer: ifeval`` (the ``ifeval`` scenario reads the prompts).
Each instance carries its instructions in its one reference, as JSON
(``assay.scenarios.ifeval.instruction_spec``):
the instruction ids and their arguments, exactly the fields of an IFEval row.

The checks are lm-evaluation-harness's own (``lm_eval.tasks.ifeval``, the code behind its
``ifeval`` task, itself Google's reference implementation): each answer goes through lm-eval's
``process_results`` with the row as its document, so every verdict is lm-eval's, strict (the
answer as it is) and loose (also with its first and/or last line dropped and ``*`` removed).
lm-eval is assay's optional ``lmeval`` extra, imported only when the scorer runs; without it
the scorer's check fails with the install command.

Per-instance stats (one answer each; a sampled entry's answers are averaged per instance):

- ``prompt_level_strict_acc`` / ``prompt_level_loose_acc``: 1 when every instruction of the
  prompt is followed, else 0. Their scorecard means are lm-eval's prompt-level accuracies.
- ``inst_level_strict_followed`` / ``inst_level_loose_followed``: how many of the prompt's
  instructions are followed, and ``instructions``: how many it has.

lm-eval's instruction-level accuracy pools the instructions of all prompts (followed over
given), which is not a mean over prompts: a prompt with three instructions weighs three
times as much as one with one. The scorer therefore declares it as a ratio
(``assay.core.scorers``, "Ratios"): ``inst_level_strict_acc`` =
sum of ``inst_level_strict_followed`` / sum of ``instructions`` (and ``inst_level_loose_acc``
likewise), which the scorecard computes over the instances with an instance-bootstrap
interval. Equal to lm-eval's ``agg_inst_level_acc`` on the same answers by construction.

Two things are set before lm-eval's checks are imported: nltk's search path gets assay's
shipped Punkt tables (``assay.core.nltk_data``; lm-eval would otherwise try to download
them), and ``langdetect``'s seed is fixed to 0. The language checks call ``langdetect``, which
draws random numbers and is seeded from the system by default (so lm-eval's verdict on an
ambiguous text may change from one run to the next); with the seed fixed, rescoring the same
answers gives the same verdicts. The seed is process-wide: lm-eval's own task run in the same
process draws the same way.

**Where lm-eval's verdict is a random draw.** An instruction whose arguments are missing or
unusable gets random ones from Python's global ``random`` when lm-eval builds it. In IFEval
this happens to two rows, 1122 and 1129: ``keywords:letter_frequency`` with the "letter" ``#``
(at least 4 hashtags) and ``!`` (at least 6 exclamation marks), which lm-eval (like Google's
code) accepts only from a to z, so it counts a random ASCII letter instead. lm-eval's verdict
on these depends on its run's random state (the order and number of draws before), not on
the answer alone, and two lm-eval runs can disagree. assay seeds the generator from the
instance id for each check (restoring the caller's state after), so its verdict is a function
of the instance and the answer; it equals lm-eval's wherever lm-eval's is not a draw.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any, ClassVar

from assay.core.digests import seed_from
from assay.core.nltk_data import use_bundled_nltk_data
from assay.core.records import Instance, ModelOutput
from assay.core.scorers import Scored, Stat
from assay.scenarios.ifeval import instruction_spec
from assay.scoring.samples import answers_by_instance

IFEVAL = "ifeval"
PROMPT_STRICT = "prompt_level_strict_acc"
PROMPT_LOOSE = "prompt_level_loose_acc"
INST_STRICT = "inst_level_strict_acc"
INST_LOOSE = "inst_level_loose_acc"
FOLLOWED_STRICT = "inst_level_strict_followed"
FOLLOWED_LOOSE = "inst_level_loose_followed"
INSTRUCTIONS = "instructions"
INSTALL = "pip install 'assay[lmeval]' (lm-eval[ifeval]==0.4.13)"


class IFEvalUnavailable(RuntimeError):
    """lm-evaluation-harness's IFEval checks cannot be imported here."""


def ifeval_document(instance: Instance) -> dict[str, Any]:
    """The IFEval row of ``instance`` as lm-eval's ``process_results`` reads it (``key``,
    ``prompt``, ``instruction_id_list``, ``kwargs``); ``ValueError`` naming the instance when
    its reference is not an instruction spec."""
    golds = instance.gold_texts
    if len(golds) != 1:
        raise ValueError(
            f"instance {instance.id!r}: an IFEval instance has one reference (its instructions "
            f"as JSON), got {len(golds)}"
        )
    try:
        spec = json.loads(golds[0])
        instruction_spec(spec["key"], spec["instruction_id_list"], spec["kwargs"])
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(
            f"instance {instance.id!r}: its reference is not an IFEval instruction spec: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    return {
        "key": spec["key"],
        "prompt": instance.input,
        "instruction_id_list": spec["instruction_id_list"],
        "kwargs": spec["kwargs"],
    }


@cache
def _lm_eval_checks() -> tuple[Callable[[dict, list[str]], dict[str, Any]], frozenset[str]]:
    """lm-eval's ``process_results`` and the instruction ids it knows (imported once)."""
    use_bundled_nltk_data()
    try:
        import langdetect

        langdetect.DetectorFactory.seed = 0
        from lm_eval.tasks.ifeval import instructions_registry
        from lm_eval.tasks.ifeval.utils import process_results
    except ImportError as exc:
        raise IFEvalUnavailable(
            f"the ifeval scorer needs lm-evaluation-harness's IFEval checks, which cannot be "
            f"imported ({type(exc).__name__}: {exc}); install them with: {INSTALL}"
        ) from None
    return process_results, frozenset(instructions_registry.INSTRUCTION_DICT)


def follows(instance: Instance, response: str) -> dict[str, Any]:
    """lm-eval's verdicts on one answer: ``prompt_level_strict_acc`` and
    ``prompt_level_loose_acc`` (bool), ``inst_level_strict_acc`` and ``inst_level_loose_acc``
    (one bool per instruction), exactly as its ``ifeval`` task's ``process_results``."""
    process_results, known = _lm_eval_checks()
    document = ifeval_document(instance)
    unknown = [i for i in document["instruction_id_list"] if i not in known]
    if unknown:
        raise ValueError(
            f"instance {instance.id!r}: instruction id(s) {', '.join(map(repr, unknown))} are "
            "not IFEval instructions lm-eval knows"
        )
    # Where an instruction's arguments are missing or unusable, lm-eval draws them from the
    # global random generator (see the module doc); a seed from the instance makes the draw
    # the same on every run, and the caller's random state is left as it was.
    state = random.getstate()
    random.seed(seed_from(IFEVAL, instance.id))
    try:
        return process_results(document, [response])
    finally:
        random.setstate(state)


class IFEval:
    """The ``ifeval`` scorer (see the module doc)."""

    metric = PROMPT_STRICT
    ratios: ClassVar[dict[str, tuple[str, str]]] = {
        INST_STRICT: (FOLLOWED_STRICT, INSTRUCTIONS),
        INST_LOOSE: (FOLLOWED_LOOSE, INSTRUCTIONS),
    }

    def check(self, args: None) -> None:
        """Raise :class:`IFEvalUnavailable` with the install command when lm-eval is missing."""
        _lm_eval_checks()

    def score(
        self, instances: Sequence[Instance], outputs: Sequence[ModelOutput], args: None
    ) -> Scored:
        by_id = {i.id: i for i in instances}
        stats: list[Stat] = []
        for (instance_id, trial), answers in answers_by_instance(outputs).items():
            verdicts = [follows(by_id[instance_id], a.completion.text) for a in answers]
            n = len(verdicts)
            values = {
                PROMPT_STRICT: sum(bool(v[PROMPT_STRICT]) for v in verdicts) / n,
                PROMPT_LOOSE: sum(bool(v[PROMPT_LOOSE]) for v in verdicts) / n,
                FOLLOWED_STRICT: sum(sum(map(bool, v[INST_STRICT])) for v in verdicts) / n,
                FOLLOWED_LOOSE: sum(sum(map(bool, v[INST_LOOSE])) for v in verdicts) / n,
                INSTRUCTIONS: float(len(verdicts[0][INST_STRICT])),
            }
            stats += [Stat(instance_id, m, v, trial=trial) for m, v in values.items()]
        return Scored(stats)
