"""An lm-eval task's documents as assay instances, and its requests as assay requests.

lm-eval builds the requests (``Task.build_all_requests``: its few-shot contexts, its
continuation strings with their target delimiter, its ``generate_until`` arguments); this
module only regroups them for assay's model clients and maps the answers back:

- the ``loglikelihood`` requests of one document that share a context (a multiple-choice
  question's choices) become one ``RequestKind.LOGLIKELIHOOD`` request with those
  continuations, in lm-eval's order, so the context is computed once; whitespace ending a
  context moves to the continuations, as lm-eval's models move it before scoring;
- a ``generate_until`` request becomes a ``RequestKind.GENERATE`` request with lm-eval's
  ``until`` as stop sequences and ``max_gen_toks`` as ``max_tokens`` (256 when the task sets
  none, lm-eval's HF default), greedy unless the task samples (``do_sample``, with its
  temperature and top_p; each of lm-eval's ``repeats`` is then a seeded sample of its own);
- a ``loglikelihood_rolling`` request (perplexity tasks: wikitext, pile, paloma) becomes a
  ``RequestKind.LOGLIKELIHOOD_ROLLING`` request whose prompt is the whole text; the model
  client scores it over rolling windows of its context, as lm-eval's HFLM does.

Instances are the task's evaluation documents in lm-eval's order, ids ``"0"``, ``"1"``, ...
(lm-eval's ``doc_id``), all in split ``test``; an entry's ``max_instances`` is lm-eval's
``limit``. An instance's input is the document's ``doc_to_text`` and its references the
choices (the gold ones marked) or the target text: what the explorer shows. The prompts sent
are lm-eval's full contexts, stored with every ``model_outputs`` row.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from assay.core.digests import sample_seed
from assay.core.records import Instance, Reference, Request, RequestKind
from assay.scenarios.base import Scenario, ScenarioData, register_scenario
from assay.scenarios.lm_eval_tasks import (
    DEFAULT_MAX_GEN_TOKS,
    LM_EVAL,
    LmEvalTask,
    LmEvalTaskError,
    LoadedTask,
    lm_eval_globals,
    load_task,
)
from assay.scoring.lm_eval_peer import needs_peer, require_peer

METHOD = LM_EVAL  # Request.method of every request built here
TEMPLATE_ID = LM_EVAL  # lm-eval's prompt, not an assay layout
EVAL_SPLIT = "test"
ROLLING = "loglikelihood_rolling"  # lm-eval's perplexity output type


def instances_of(loaded: LoadedTask) -> list[Instance]:
    """Every evaluation document of the task as an :class:`Instance` (see the module doc)."""
    task = loaded.task
    out = []
    with lm_eval_globals(loaded):
        docs = list(task.doc_iterator(rank=0, limit=None, world_size=1))
        for doc_id, doc in docs:
            try:
                if task.OUTPUT_TYPE == ROLLING:
                    out.append(_rolling_instance(task, doc_id, doc))
                else:
                    out.append(_instance(task, doc_id, doc))
            except Exception as exc:
                raise LmEvalTaskError(
                    f"lm-eval task {loaded.spec.task!r}: document {doc_id} "
                    f"({_where(loaded, doc_id)}): {type(exc).__name__}: {exc}"
                ) from exc
    if not out:
        raise LmEvalTaskError(f"lm-eval task {loaded.spec.task!r} has no evaluation documents")
    return out


def _where(loaded: LoadedTask, doc_id: int) -> str:
    """Where a document was read from, for error messages."""
    config = loaded.task.config
    split = config.test_split or config.validation_split
    path = loaded.data.files.get(split) if loaded.data.local else None
    if path is None:
        return f"split {split!r} of {loaded.data.dataset!r}"
    return f"{path}, row {doc_id + 1} unless the task's process_docs reorders rows"


def _instance(task: Any, doc_id: int, doc: Any) -> Instance:
    text = task.doc_to_text(doc)
    target = task.doc_to_target(doc)
    choices = task.doc_to_choice(doc) if task.config.doc_to_choice is not None else None
    shown = text if isinstance(text, str) else json.dumps(doc, default=str, ensure_ascii=False)
    if choices:
        gold = target if isinstance(target, list) else [target]
        indices = {choices.index(g) if isinstance(g, str) and g in choices else g for g in gold}
        references = tuple(Reference(str(c), i in indices) for i, c in enumerate(choices))
    else:
        golds = target if isinstance(target, list) else [target]
        references = tuple(Reference(str(g), True) for g in golds)
    return Instance(id=str(doc_id), input=shown, references=references, split=EVAL_SPLIT)


def _rolling_instance(task: Any, doc_id: int, doc: Any) -> Instance:
    """A perplexity document: the text scored (lm-eval's ``doc_to_target``) is the input,
    with no references (nothing is matched against it)."""
    text = task.doc_to_target(doc)
    if not isinstance(text, str):
        raise LmEvalTaskError(f"its text (doc_to_target) is {type(text).__name__}, not a string")
    return Instance(id=str(doc_id), input=text, references=(), split=EVAL_SPLIT)


def _rolling_request(inst: Any, doc_id: int) -> Request:
    """A ``loglikelihood_rolling`` instance: the whole text, scored over the model's windows."""
    (text,) = inst.arguments
    return Request(
        instance_id=str(doc_id),
        kind=RequestKind.LOGLIKELIHOOD_ROLLING,
        prompt=text,
        template_id=TEMPLATE_ID,
        method=METHOD,
    )


@dataclass
class DocRequests:
    """One document's lm-eval instances (sorted by ``idx``) and the assay requests that
    answer them; ``slots[i]`` says where lm-eval instance i's answer is: (request, choice)
    for a log-likelihood, (request, -1) for a generation."""

    doc_id: int
    doc: Any
    lm_instances: list[Any]
    requests: list[Request] = field(default_factory=list)
    slots: list[tuple[int, int]] = field(default_factory=list)
    repeats: list[int] = field(default_factory=list)  # requests per lm-eval instance


def _sample_requests(base: Request, repeats: int, seed: int) -> list[Request]:
    if not base.sampled:
        return [base]
    return [
        replace(base, sample=r, seed=sample_seed(seed, base.decoding_digest, r))
        for r in range(repeats)
    ]


def _generation(context: str, gen_kwargs: dict[str, Any], doc_id: int) -> Request:
    until = gen_kwargs.get("until") or []
    stop = (until,) if isinstance(until, str) else tuple(s for s in until if s)
    sampled = bool(gen_kwargs.get("do_sample")) and float(gen_kwargs.get("temperature", 1.0)) > 0
    return Request(
        instance_id=str(doc_id),
        kind=RequestKind.GENERATE,
        prompt=context,
        max_tokens=int(gen_kwargs.get("max_gen_toks", DEFAULT_MAX_GEN_TOKS)),
        stop=stop,
        template_id=TEMPLATE_ID,
        method=METHOD,
        temperature=float(gen_kwargs.get("temperature", 1.0)) if sampled else 0.0,
        top_p=float(gen_kwargs.get("top_p", 1.0)) if sampled else 1.0,
    )


def doc_requests(loaded: LoadedTask, limit: int | None) -> list[DocRequests]:
    """lm-eval's requests for the first ``limit`` documents (all when None), regrouped.

    Call it inside :func:`lm_eval_globals` (as :func:`requests_for` does), so lm-eval's
    few-shot draws and global generators start where they start in lm-eval's own run."""
    task = loaded.task
    chat = loaded.spec.chat  # lm-eval's chat options, as its evaluator passes them
    template = loaded.chat_template
    task.build_all_requests(
        limit=limit,
        rank=0,
        world_size=1,
        cache_requests=False,
        rewrite_requests_cache=False,
        system_instruction=chat.system_instruction,
        apply_chat_template=chat.chat,
        fewshot_as_multiturn=chat.fewshot_as_multiturn,
        chat_template=template.render if template is not None else None,
        tokenizer_name="",
    )
    lm_instances = list(task.instances)
    by_doc: dict[int, list[Any]] = defaultdict(list)
    for inst in lm_instances:
        by_doc[inst.doc_id].append(inst)
    out = []
    for doc_id in sorted(by_doc):
        group = sorted(by_doc[doc_id], key=lambda inst: inst.idx)
        out.append(_regroup(loaded, doc_id, group))
    return out


def _regroup(loaded: LoadedTask, doc_id: int, group: list[Any]) -> DocRequests:
    doc = DocRequests(doc_id, group[0].doc, group)
    contexts: dict[str, int] = {}  # log-likelihood context → index in doc.requests
    generations: dict[str, int] = {}
    for inst in group:
        kind = inst.request_type
        if kind == "loglikelihood":
            context, continuation = _moved_whitespace(*inst.arguments[:2])
            at = contexts.get(context)
            if at is None:
                at = contexts[context] = len(doc.requests)
                part = f"context-{len(contexts) - 1}" if len(contexts) > 1 else ""
                doc.requests.append(
                    Request(
                        instance_id=str(doc_id),
                        kind=RequestKind.LOGLIKELIHOOD,
                        prompt=context,
                        template_id=TEMPLATE_ID,
                        method=METHOD,
                        part=part,
                    )
                )
            request = doc.requests[at]
            choice = len(request.continuations)
            doc.requests[at] = _with_continuation(request, continuation)
            doc.slots.append((at, choice))
            doc.repeats.append(1)
        elif kind == "generate_until":
            context, gen_kwargs = inst.arguments[:2]
            key = json.dumps([context, gen_kwargs], sort_keys=True, default=str)
            at = generations.get(key)
            if at is None:
                at = generations[key] = len(doc.requests)
                base = _generation(context, dict(gen_kwargs), doc_id)
                samples = _sample_requests(base, inst.repeats, loaded.spec.fewshot_seed)
                doc.requests.extend(samples)
            doc.slots.append((at, -1))
            doc.repeats.append(inst.repeats)
        elif kind == ROLLING:
            doc.slots.append((len(doc.requests), 0))
            doc.repeats.append(1)
            doc.requests.append(_rolling_request(inst, doc_id))
        else:
            raise LmEvalTaskError(
                f"lm-eval task {loaded.spec.task!r}: request type {kind!r} is not supported"
            )
    return doc


def _moved_whitespace(context: str, continuation: str) -> tuple[str, str]:
    """The pair lm-eval's models score (``TemplateLM._encode_pair``): whitespace ending the
    context is moved to the continuation, so its tokens are scored with the continuation
    (a chat template's context ends with a newline after the assistant header)."""
    kept = context.rstrip()
    if kept == context or not kept:
        return context, continuation
    return kept, context[len(kept) :] + continuation


def _with_continuation(request: Request, continuation: str) -> Request:
    return replace(request, continuations=(*request.continuations, continuation))


def requests_for(loaded: LoadedTask, instances: Sequence[Instance]) -> list[Request]:
    """The requests of ``instances``, which must be the task's first documents (an entry's
    ``max_instances`` is lm-eval's ``limit``)."""
    expected = [str(i) for i in range(len(instances))]
    if [i.id for i in instances] != expected:
        raise LmEvalTaskError(
            f"lm-eval task {loaded.spec.task!r}: requests are built for the first documents "
            "in lm-eval's order; the instances given are not (ids "
            f"{', '.join(i.id for i in instances[:5])}…)"
        )
    if needs_peer(loaded.task):
        # Its answers could not be scored here: refused before any request runs.
        require_peer(loaded.spec.task)
    with lm_eval_globals(loaded):
        docs = doc_requests(loaded, len(instances))
    return [r for doc in docs for r in doc.requests]


@register_scenario(LM_EVAL)
class LmEvalScenario(Scenario):
    """An lm-eval task's documents (a suite's ``scenario: lm_eval`` entry, one per task of
    a group; the suite expands groups and passes each task's settings here)."""

    def __init__(self, **settings: Any) -> None:
        self.spec = task_spec(settings)

    def load(self) -> ScenarioData:
        loaded = load_task(self.spec)
        return ScenarioData(instances_of(loaded), revision=loaded.revision)


def task_spec(settings: dict[str, Any]) -> LmEvalTask:
    """The :class:`LmEvalTask` a suite entry's expanded ``args`` describe."""
    known = set(LmEvalTask.__dataclass_fields__)
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"scenario 'lm_eval': unknown argument(s) {', '.join(unknown)}")
    values = dict(settings)
    values["data_files"] = tuple(tuple(pair) for pair in values.get("data_files") or ())
    return LmEvalTask(**values)


def task_settings(spec: LmEvalTask) -> dict[str, Any]:
    """The JSON-able ``args`` of an expanded suite entry (the inverse of :func:`task_spec`)."""
    out = {name: getattr(spec, name) for name in LmEvalTask.__dataclass_fields__}
    out["data_files"] = [list(pair) for pair in spec.data_files]
    return out
