"""Model-based contamination signals, for a model version that declares no training corpus.

Without the training data, membership can only be inferred from how the model treats the
test text. Two published signals, both reported as **paired differences** on the same
instances, never as absolute numbers (an absolute likelihood says more about how plain a
text is than about whether the model saw it):

- **Min-K% Prob** (Shi et al. 2024, "Detecting Pretraining Data from Large Language
  Models"): the mean of the lowest k% per-token log-probabilities of a text. A text seen in
  training has few very unlikely tokens. Per instance the statistic is
  ``min_k(original) - mean(min_k(perturbed copies))``: a seen text is more likely than its
  meaning-preserving rewrites, because the rewrites break the memorized sequence.
- **Guided vs general completion** (Golchin & Surdeanu 2024, "Time Travel in LLMs"): the
  model completes the second half of an instance given its first half, once with a prompt
  naming the dataset and split (guided) and once without (general); per instance the
  statistic is ``ROUGE-L(guided) - ROUGE-L(general)`` against the true second half.

Decisions where the papers leave room (written here because the next person looks here):

- **Which text.** An instance's text is its input, a newline, and its first gold reference
  (both stripped); the input alone when it has no gold reference. The test item as a
  dataset shows it is question plus answer; one text per instance keeps one pair per unit.
- **Which "tokens", and the cache.** Through the model client, never around the request
  cache (see :func:`text_logprobs`). A client that scores whole texts exactly
  (``PromptScorer.score_prompts``: ``TransformersClient``, alone or inside the
  ``CachedClient`` the evaluation builds) gives every model token's log-probability from one
  forward pass per batch of texts, as the paper does; the ``CachedClient``'s cache stores each
  text's values under a key of its own (model artifact, backend, serving config and the
  text), so a rerun makes no model call. Any other client (an OpenAI-compatible endpoint,
  llama.cpp) is asked with ``LOGLIKELIHOOD`` requests, one per word piece
  (``assay.models.prompt_logprobs``: a piece is its leading whitespace plus a run of non-space
  characters, scored given all the text before it), cached like every request; Min-K% is
  then over word pieces (a piece's log-probability is the sum of its tokens'), and the cost
  is one request per piece with a growing prefix, about quadratic in the text's length. A
  value with nothing before it is left out (the first piece; the first token when the
  tokenizer puts no BOS before raw text, as SmolLM2's does not). The figures name the unit
  (``unit``): values from the two paths are not comparable with each other.
  ``benchmarks/bench_min_k_prob.py`` measures both against a plain evaluation.
- **How many of the lowest.** ``floor(k * n)`` values (at least one) of the ``n`` scored
  values: the authors' reference code takes ``int(len(probs) * ratio)`` lowest values (as
  recalled; their package is not installed here to check), which is the floor; the minimum of
  one keeps short texts defined where theirs would average nothing.
- **Which perturbations.** By default ``filler_words:prob=0.2`` and ``synonyms:prob=0.5``
  (assay's robustness perturbations, seeded from the instance id), applied to the input only;
  a rewrite identical to the original is left out. Typos were tried and rejected: on the
  bundled SmolLM2-135M (word-piece Min-K%) they lower Min-K% by about as much for random-word
  sentences (10 to 20 nats) as for famous public-domain ones (12 to 22), because a misspelt
  word is unlikely in any text; inserted fillers lowered it by 1 to 7 nats for the famous
  sentences and by about 0 (-0.7 to +0.9) for random words. Callers may pass their own
  perturbed inputs (the suite's ``perturbed_instances``), but a perturbation that makes any
  text unlikely weakens the test.
- **Scenario-level test.** Wilcoxon's signed-rank test, one-sided ("originals score higher"),
  on the per-instance differences: log-probability differences are heavy-tailed (one rare
  word moves Min-K% by several nats), and the signed-rank test assumes only a symmetric
  distribution, not a normal one; with few instances scipy computes its exact distribution.
  Instances whose difference is exactly zero are dropped by the test (Wilcoxon's convention).
  Beside it: the mean difference with a percentile bootstrap interval (``assay.stats``,
  seeded from the instance ids). The null of "no difference" is not neutral: natural text is
  often a little more likely than its rewrites even when unseen (much more so under rewrites
  that make any text unlikely), so a significant result says "the model prefers this
  scenario's exact wording", which contamination predicts, not proof of contamination.
- **Per-instance flags are weak evidence.** Min-K%: an instance is flagged when its
  difference is positive and above ``median + 3 * 1.4826 * MAD`` of the scenario's
  differences (a robust z-score above 3: an outlier among its own scenario), and only when
  the scenario has at least ``MIN_FLAG_INSTANCES`` differences with a non-zero spread. It
  finds instances the model prefers unusually strongly; it cannot flag anything in a
  scenario that is contaminated throughout, and one instance's difference rests on one or two
  rewrites (on the bundled model, six random-word sentences gave one flag, six famous openings
  none). Guided completion: flagged when the guided completion reproduces the second half
  nearly exactly (ROUGE-L at least ``NEAR_EXACT_ROUGE_L``) and better than the general one,
  standing in for the paper's judged "exact or near-exact match".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from assay.core.digests import digest_json, seed_from
from assay.core.records import Completion, Instance, Request, RequestKind
from assay.models.base import ModelClient, backend_identity
from assay.models.cache import CachedClient
from assay.models.prompt_logprobs import (
    PromptScorer,
    assemble_pieces,
    piece_requests,
    split_pieces,
)
from assay.perturbations import get_perturbation
from assay.scoring.metrics.accuracy import rouge_l
from assay.stats import bootstrap_interval

MEMBERSHIP_DETECTORS = ("min_k_prob", "guided_completion")
DEFAULT_PERTURBATIONS = ("filler_words:prob=0.2", "synonyms:prob=0.5")
# Below this many differences (or with no spread among them) nothing is flagged per instance.
MIN_FLAG_INSTANCES = 5
ROBUST_Z = 3.0
# MAD times this estimates the standard deviation of a normal distribution.
_MAD_TO_SD = 1.4826
NEAR_EXACT_ROUGE_L = 0.75
CONFIDENCE = 0.95
N_RESAMPLES = 2000
GUIDED_PROMPT = (
    "Instruction: You are provided with the first piece of an instance from the {split} "
    "split of the {dataset} dataset. Finish the second piece of the instance as exactly "
    "appeared in the dataset. Only rely on the original form of the instance in the dataset "
    "to finish the second piece.\n\nFirst piece: {first}\n\nSecond piece:"
)
GENERAL_PROMPT = (
    "Instruction: Finish the second piece based on the first piece, such that these two "
    "pieces become a single instance.\n\nFirst piece: {first}\n\nSecond piece:"
)
# Completions stop at a blank line; the budget is twice the words to reproduce, bounded.
_COMPLETION_STOP = ("\n\n",)
_MAX_COMPLETION_TOKENS = 256


@dataclass(frozen=True, slots=True)
class MembershipFinding:
    """One model-based detector's verdict on one instance (a row of ``contamination``).

    ``score`` is the detector's paired difference (NaN when the instance could not be
    paired); ``label`` is always "" for these detectors.
    """

    instance_id: str
    detector: str
    score: float
    flagged: bool
    label: str
    evidence: str


def min_k_prob(token_logprobs: Sequence[float], k: float = 0.2) -> float:
    """The mean of the lowest ``floor(k * n)`` (at least one) of ``n`` log-probabilities.

    Raises ``ValueError`` for ``k`` outside (0, 1], no values, or a value that is not a
    finite number.
    """
    if not (isinstance(k, int | float) and 0.0 < k <= 1.0):
        raise ValueError(f"k must be in (0, 1], got {k!r}")
    values = np.asarray(token_logprobs, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("min_k_prob needs at least one token log-probability")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ValueError(f"token log-probability {bad[0]} is {float(values[bad[0]])}, not finite")
    # The epsilon keeps 0.3 * 10 (3.0000000000000004) and 0.7 * 10 from rounding the wrong way.
    count = max(1, math.floor(k * values.size + 1e-9))
    return float(np.sort(values)[:count].mean())


def membership_text(instance: Instance, text_input: str | None = None) -> str:
    """The text membership is tested on: the input, a newline, the first gold reference.

    ``text_input`` replaces the instance's input (a perturbed copy of it). Raises
    ``ValueError`` naming the instance when the text is empty.
    """
    parts = [(instance.input if text_input is None else text_input).strip()]
    gold = instance.gold_texts
    if gold:
        parts.append(gold[0].strip())
    text = "\n".join(p for p in parts if p)
    if not text:
        raise ValueError(f"instance {instance.id!r}: empty text (no input and no gold reference)")
    return text


def default_perturbed_inputs(
    instances: Sequence[Instance], specs: Sequence[str] = DEFAULT_PERTURBATIONS
) -> dict[str, list[str]]:
    """Each instance's input under each perturbation in ``specs``, seeded from its id."""
    perturbations = [get_perturbation(spec) for spec in specs]
    return {i.id: [p.apply(i.input, seed=i.id) for p in perturbations] for i in instances}


def scoring_unit(client: ModelClient) -> str:
    """``"token"`` when ``client`` scores whole texts exactly, else ``"word piece"``."""
    inner = client.client if isinstance(client, CachedClient) else client
    return "token" if isinstance(inner, PromptScorer) else "word piece"


def text_logprobs(
    client: ModelClient, texts: Sequence[str], labels: Sequence[str] | None = None
) -> list[list[float]]:
    """The scored log-probabilities of each text, in order (see ``scoring_unit``).

    - A client that is a ``PromptScorer`` (or a ``CachedClient`` around one): every model
      token after the first, from one forward pass per batch of texts; through a
      ``CachedClient`` each text's values are stored in its request cache (key in
      :func:`prompt_scores_key`), so a repeat makes no model call.
    - Any other client: every word piece after the first, one ``LOGLIKELIHOOD`` request each
      through ``complete`` (cached by a ``CachedClient`` like any request).

    Raises ``ValueError`` naming the text (by ``labels[n]`` when given, else ``text n``) when
    it has fewer than two words or could not be scored.
    """
    names = list(labels) if labels is not None else [f"text {n}" for n in range(len(texts))]
    if len(names) != len(texts):
        raise ValueError(f"{len(names)} labels for {len(texts)} texts")
    for name, text in zip(names, texts, strict=True):
        if len(split_pieces(text)) < 2:
            raise ValueError(f"{name} ({text[:40]!r}) needs at least two words to be scored")
    if scoring_unit(client) == "token":
        return _token_logprobs(client, texts, names)
    return _piece_logprobs(client, texts, names)


def prompt_scores_key(client: CachedClient, text: str) -> str:
    """The request-cache key of a text's per-token scores: the cache's own policy (model
    artifact, backend, serving config) with the text in place of a request, under a
    ``prompt_logprobs`` tag no ``Request`` digest can equal."""
    return digest_json(
        [
            "prompt_logprobs",
            client.artifact_digest,
            client.serving.to_dict(),
            backend_identity(client.client),
            text,
        ]
    )


def _token_logprobs(client: ModelClient, texts: Sequence[str], names: Sequence[str]) -> list:
    cached = client if isinstance(client, CachedClient) else None
    scorer = cached.client if cached is not None else client
    assert isinstance(scorer, PromptScorer)  # checked by scoring_unit
    unique = list(dict.fromkeys(texts))
    values: dict[str, tuple[float, ...]] = {}
    if cached is not None:
        keys = {t: prompt_scores_key(cached, t) for t in unique}
        found = cached.cache.get_many(keys.values())
        values = {t: found[k].token_logprobs for t, k in keys.items() if k in found}
    missing = [t for t in unique if t not in values]
    if missing:
        try:
            scored = scorer.score_prompts(missing)
        except ValueError:
            # Find the text at fault, one at a time (only on this failure path).
            for text in missing:
                try:
                    scorer.score_prompts([text])
                except ValueError as exc:
                    raise ValueError(f"{names[texts.index(text)]}: {exc}") from None
            raise
        fresh: dict[str, Completion] = {}
        for text, result in zip(missing, scored, strict=True):
            kept = tuple(float(v) for v in result.token_logprobs if v is not None)
            if not kept:
                raise ValueError(f"{names[texts.index(text)]}: no token could be scored")
            fresh[text] = Completion(prompt_tokens=len(result.tokens), token_logprobs=kept)
            values[text] = kept
        if cached is not None:
            cached.cache.put_many({prompt_scores_key(cached, t): c for t, c in fresh.items()})
    return [list(values[t]) for t in texts]


def _piece_logprobs(client: ModelClient, texts: Sequence[str], names: Sequence[str]) -> list:
    requests: list[Request] = []
    spans: list[tuple[int, int]] = []
    for text in texts:
        pieces = piece_requests(text)
        spans.append((len(requests), len(pieces)))
        requests.extend(pieces)
    completions = client.complete(requests)
    if len(completions) != len(requests):
        raise RuntimeError(f"model client returned {len(completions)} of {len(requests)}")
    out = []
    for name, text, (start, count) in zip(names, texts, spans, strict=True):
        try:
            scored = assemble_pieces(text, completions[start : start + count])
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        out.append([float(v) for v in scored.token_logprobs[1:] if v is not None])
    return out


def _check_instances(instances: Sequence[Instance]) -> None:
    if not instances:
        raise ValueError("no instances to test for membership")
    seen: set[str] = set()
    for instance in instances:
        if instance.id in seen:
            raise ValueError(f"instance id {instance.id!r} appears twice")
        seen.add(instance.id)


def _paired_test(detector: str, diffs: Sequence[float], alpha: float, seed: int) -> dict[str, Any]:
    """The scenario-level one-sided Wilcoxon test and bootstrap interval of ``diffs``."""
    d = np.asarray(diffs, dtype=np.float64)
    figures: dict[str, Any] = {
        "detector": detector,
        "test": "wilcoxon_signed_rank",
        "alternative": "greater",
        "n": int(d.size),
        "alpha": alpha,
        "confidence": CONFIDENCE,
    }
    if d.size == 0:
        nan = float("nan")
        return figures | {
            "mean_diff": nan,
            "median_diff": nan,
            "ci_low": nan,
            "ci_high": nan,
            "p_value": nan,
            "significant": False,
        }
    low, high = bootstrap_interval(d, seed=seed, n_resamples=N_RESAMPLES, confidence=CONFIDENCE)
    if np.any(d != 0):
        from scipy.stats import wilcoxon  # scipy.stats takes most of a second to import

        p_value = float(wilcoxon(d, alternative="greater", zero_method="wilcox").pvalue)
    else:
        p_value = 1.0  # every pair tied: no evidence either way
    return figures | {
        "mean_diff": float(d.mean()),
        "median_diff": float(np.median(d)),
        "ci_low": low,
        "ci_high": high,
        "p_value": p_value,
        "significant": bool(p_value < alpha),
    }


def _flag_threshold(diffs: Sequence[float]) -> float | None:
    """``median + 3 * 1.4826 * MAD`` of ``diffs``; ``None`` when there is nothing to calibrate."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.size < MIN_FLAG_INSTANCES:
        return None
    median = float(np.median(d))
    mad = float(np.median(np.abs(d - median)))
    if mad == 0.0:
        return None
    return median + ROBUST_Z * _MAD_TO_SD * mad


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


def min_k_membership(
    client: ModelClient,
    instances: Sequence[Instance],
    perturbed: Mapping[str, Sequence[str]] | None = None,
    *,
    k: float = 0.2,
    alpha: float = 0.05,
) -> tuple[list[MembershipFinding], dict[str, Any]]:
    """Min-K% Prob of each instance against its perturbed copies (module docstring).

    ``perturbed`` maps an instance id to perturbed copies of its **input** (the rows of
    ``perturbed_instances``); each copy is scored as ``membership_text`` with that input.
    ``None``, or an id with no entry or an empty list, uses ``DEFAULT_PERTURBATIONS``.

    Returns one finding per instance (score: the difference, NaN when every copy equals the
    original, which then takes no part in the test) and the scenario figures: ``n``,
    ``mean_diff``, ``median_diff``, ``ci_low``/``ci_high`` (bootstrap, ``confidence``),
    ``p_value`` (one-sided Wilcoxon), ``significant`` (``p_value < alpha``), ``k``,
    ``flag_threshold`` (NaN when too few instances to flag any), ``n_unpaired`` and ``unit``
    (what was scored: ``"token"`` or ``"word piece"``, see :func:`scoring_unit`).
    """
    if not 0.0 < k <= 1.0:
        raise ValueError(f"k must be in (0, 1], got {k!r}")
    _check_alpha(alpha)
    _check_instances(instances)
    perturbed = perturbed or {}
    known = {i.id for i in instances}
    unknown = sorted(set(perturbed) - known)
    if unknown:
        raise ValueError(f"perturbed inputs given for unknown instance id {unknown[0]!r}")
    missing = [i for i in instances if not perturbed.get(i.id)]
    defaults = default_perturbed_inputs(missing)

    texts: list[str] = []
    labels: list[str] = []
    # Per instance: the original's index in ``texts`` and its copies' (none: not tested).
    layout: list[tuple[int, list[int]]] = []
    for instance in instances:
        original = membership_text(instance)
        copies = perturbed.get(instance.id) or defaults[instance.id]
        if isinstance(copies, str):
            raise ValueError(f"instance {instance.id!r}: perturbed inputs must be a list")
        rewrites = list(dict.fromkeys(membership_text(instance, c) for c in copies))
        # A rewrite equal to the original carries no evidence; one word cannot be scored.
        rewrites = [r for r in rewrites if r != original and len(split_pieces(r)) > 1]
        if len(split_pieces(original)) < 2:
            rewrites = []
        layout.append((len(texts), list(range(len(texts) + 1, len(texts) + 1 + len(rewrites)))))
        if rewrites:
            texts.extend([original, *rewrites])
            labels.append(f"instance {instance.id!r} (original)")
            labels.extend(
                f"instance {instance.id!r} (perturbed copy {j})" for j in range(len(rewrites))
            )
    scores = [min_k_prob(v, k) for v in text_logprobs(client, texts, labels)]

    diffs: dict[str, float] = {}
    for instance, (orig, copies) in zip(instances, layout, strict=True):
        if copies:
            diffs[instance.id] = scores[orig] - float(np.mean([scores[c] for c in copies]))
    threshold = _flag_threshold(list(diffs.values()))
    seed = seed_from("min_k_prob", *sorted(known))
    figures = _paired_test("min_k_prob", list(diffs.values()), alpha, seed)
    figures |= {
        "k": k,
        "unit": scoring_unit(client),
        "flag_threshold": float("nan") if threshold is None else threshold,
        "n_unpaired": len(instances) - len(diffs),
    }
    findings = []
    for instance, (orig, copies) in zip(instances, layout, strict=True):
        diff = diffs.get(instance.id)
        if diff is None:
            reason = "no perturbation changed the text, or it has one word: not tested"
            findings.append(
                MembershipFinding(instance.id, "min_k_prob", float("nan"), False, "", reason)
            )
            continue
        flagged = threshold is not None and diff > 0 and diff > threshold
        rule = "n/a" if threshold is None else f"{threshold:+.3f}"
        evidence = (
            f"min-k%({k:g}) original {scores[orig]:.3f}, perturbed "
            + ", ".join(f"{scores[c]:.3f}" for c in copies)
            + f"; difference {diff:+.3f} (flag above {rule}); scenario p={figures['p_value']:.3g}"
        )
        findings.append(MembershipFinding(instance.id, "min_k_prob", diff, flagged, "", evidence))
    return findings, figures


def split_halves(text: str) -> tuple[str, str] | None:
    """The text cut between its word pieces at the middle: the first ``n // 2`` pieces and
    the rest (leading space of the second half removed); ``None`` below two pieces."""
    pieces = split_pieces(text)
    if len(pieces) < 2:
        return None
    cut = pieces[len(pieces) // 2][0]
    return text[:cut], text[cut:].lstrip()


def completion_requests(
    instance: Instance, first: str, second: str, *, dataset_name: str, split: str
) -> tuple[Request, Request]:
    """The guided and the general greedy request for one instance's first half."""
    budget = min(_MAX_COMPLETION_TOKENS, 2 * len(split_pieces(second)) + 8)
    guided, general = (
        Request(
            instance_id=instance.id,
            kind=RequestKind.GENERATE,
            prompt=prompt,
            max_tokens=budget,
            stop=_COMPLETION_STOP,
            part=part,
        )
        for part, prompt in (
            ("guided", GUIDED_PROMPT.format(split=split, dataset=dataset_name, first=first)),
            ("general", GENERAL_PROMPT.format(first=first)),
        )
    )
    return guided, general


def guided_completion(
    client: ModelClient,
    instances: Sequence[Instance],
    *,
    dataset_name: str,
    split: str,
    alpha: float = 0.05,
) -> tuple[list[MembershipFinding], dict[str, Any]]:
    """Guided vs general completion of each instance's second half (module docstring).

    Two greedy ``GENERATE`` requests per instance, in one ``complete`` call (cached by a
    ``CachedClient``). Returns one finding per instance (score: ROUGE-L guided minus general;
    NaN for a one-word text, which cannot be split and takes no part in the test) and the
    scenario figures as ``min_k_membership`` gives them, plus ``mean_rouge_l_guided`` and
    ``mean_rouge_l_general``. Raises ``ValueError`` naming the instance whose request failed.
    """
    _check_alpha(alpha)
    _check_instances(instances)
    for name, value in (("dataset_name", dataset_name), ("split", split)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"guided completion needs a non-empty {name}, got {value!r}")
    halves: dict[str, tuple[str, str]] = {}
    requests: list[Request] = []
    for instance in instances:
        cut = split_halves(membership_text(instance))
        if cut is not None:
            halves[instance.id] = cut
            requests.extend(
                completion_requests(instance, *cut, dataset_name=dataset_name, split=split)
            )
    completions = client.complete(requests)
    if len(completions) != len(requests):
        raise RuntimeError(f"model client returned {len(completions)} of {len(requests)}")
    by_id: dict[str, tuple[Completion, Completion]] = {}
    for n in range(0, len(requests), 2):
        guided, general = completions[n], completions[n + 1]
        for done in (guided, general):
            if done.error is not None:
                raise ValueError(
                    f"instance {requests[n].instance_id!r}: {requests[n].part} completion "
                    f"failed: {done.error}"
                )
        by_id[requests[n].instance_id] = (guided, general)

    rouge: dict[str, tuple[float, float]] = {}
    for instance_id, (guided, general) in by_id.items():
        second = halves[instance_id][1]
        rouge[instance_id] = (
            rouge_l(guided.text.strip(), [second]),
            rouge_l(general.text.strip(), [second]),
        )
    diffs = [g - h for g, h in rouge.values()]
    seed = seed_from("guided_completion", *sorted(i.id for i in instances))
    figures = _paired_test("guided_completion", diffs, alpha, seed)
    nan = float("nan")
    figures |= {
        "dataset": dataset_name,
        "split": split,
        "mean_rouge_l_guided": float(np.mean([g for g, _ in rouge.values()])) if rouge else nan,
        "mean_rouge_l_general": float(np.mean([h for _, h in rouge.values()])) if rouge else nan,
        "n_unpaired": len(instances) - len(rouge),
    }
    findings = []
    for instance in instances:
        if instance.id not in rouge:
            reason = "text too short to split in two: not tested"
            findings.append(
                MembershipFinding(instance.id, "guided_completion", nan, False, "", reason)
            )
            continue
        guided_score, general_score = rouge[instance.id]
        diff = guided_score - general_score
        flagged = guided_score >= NEAR_EXACT_ROUGE_L and diff > 0
        evidence = (
            f"ROUGE-L guided {guided_score:.3f}, general {general_score:.3f}; "
            f"difference {diff:+.3f} (flag: guided >= {NEAR_EXACT_ROUGE_L} and above general); "
            f"scenario p={figures['p_value']:.3g}"
        )
        findings.append(
            MembershipFinding(instance.id, "guided_completion", diff, flagged, "", evidence)
        )
    return findings, figures
