"""Math answers compared as mathematics: MATH, GSM8K-style and competition answers, on
Hugging Face's ``math-verify``.

A suite entry asks for it with ``scorer: math_equivalence``. Each generated answer scores
``math_equiv`` (1 when its final answer equals a correct reference, else 0); sampled answers
add pass@k. The work is math-verify's: it extracts the answer from free text (``\\boxed{}``
first, then "the answer is ...", LaTeX in ``$...$``/``\\(...\\)``/``\\[...\\]``, plain
numbers and expressions), parses it with SymPy (fractions, roots, intervals, sets, ``\\pm``,
units in ``\\text{}`` and after numbers, percentages, thousands separators) and compares
(numerically to ``float_rounding`` places, symbolically, sets and intervals by their
elements and bounds, equations and inequalities, ``x = 3`` against ``3``).

What assay adds around it, each to make an answer read as a reader would:
- a reference without math delimiters is read as LaTeX math (``\\frac{1}{2}``, ``1,2``:
  MATH's answers), falling back to a plain expression (``gold_format`` picks one instead);
- a period that ends the text right after a digit is dropped (``x = 14/3.`` would otherwise
  parse as ``14/3.0``, a float of one significant digit);
- a one-line answer that is bare LaTeX, without delimiters or words
  (``\\frac{1}{\\sqrt{2}}``, ``\\{2, 3\\}``), is read as math inside ``$...$`` first: as
  it is, math-verify would find nothing, or only its last plain number.
A reference math-verify cannot parse fails its instance (the scorer's failure count names
it); an answer it cannot parse scores 0 and is counted (``num_answers_unparsed``).

**Timeouts.** math-verify bounds each parse and each comparison with ``signal.alarm``, which
only works in the main thread of the interpreter. Dagster runs a step in the main thread of
its process (the in-process and multiprocess executors, Celery's prefork workers), so there
the bounds hold (``timeout_s``, default 5 s, an answer that runs over scores 0). Called from
any other thread, the scorer passes ``None`` (math-verify's way to turn them off), since a
signal cannot be set there; the answer is then unbounded in time.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any, Literal

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
from pydantic import BaseModel, ConfigDict, Field

from assay.core.records import Instance, ModelOutput
from assay.core.scorers import Scored
from assay.scoring.samples import answer_stats, answers_by_instance

MATH_EQUIVALENCE = "math_equivalence"
_DELIMITERS = ("$", "\\(", "\\[", "\\boxed")
_FINAL_PERIOD = re.compile(r"(\d)\.\s*$")
_COMMAND = re.compile(r"\\[A-Za-z]+")
_WORD = re.compile(r"[A-Za-z]{3,}")


class MathEquivalenceConfig(BaseModel):
    """``scorer_args`` of ``scorer: math_equivalence`` (math-verify's own settings)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    float_rounding: int = Field(default=6, ge=0, le=15)  # decimal places numbers must share
    numeric_precision: int = Field(default=15, ge=1)  # SymPy's evalf digits
    strict: bool = True  # variables matter, sets differ from tuples
    allow_set_relation_comp: bool = False  # (1, 2) vs 1 < x < 2 both ways (else gold-led)
    boxed_first: bool = True  # a \boxed{} answer wins over "the answer is" and the rest
    gold_format: Literal["auto", "latex", "expr"] = "auto"
    timeout_s: int = Field(default=5, ge=1)  # per parse and per comparison (main thread)


class MathEquivalence:
    """The ``math_equivalence`` scorer (see the module doc)."""

    metric = "math_equiv"
    Args = MathEquivalenceConfig

    def score(
        self,
        instances: Sequence[Instance],
        outputs: Sequence[ModelOutput],
        args: MathEquivalenceConfig | None,
    ) -> Scored:
        config = args or MathEquivalenceConfig()
        by_id = {i.id: i for i in instances}
        golds: dict[str, list[Any]] = {}
        unparsed = 0
        stats = []
        for (instance_id, trial), answers in answers_by_instance(outputs).items():
            if instance_id not in golds:
                golds[instance_id] = parse_references(by_id[instance_id], config)
            values = []
            for answer in answers:
                parsed = parse_answer(answer.completion.text, config)
                unparsed += not parsed
                values.append(float(bool(parsed) and _verify(golds[instance_id], parsed, config)))
            sampled = any(a.request.sampled for a in answers)
            stats += answer_stats(instance_id, trial, self.metric, values, sampled)
        return Scored(stats, {"num_answers_unparsed": float(unparsed)})


def equivalent(reference: str, answer: str, config: MathEquivalenceConfig | None = None) -> bool:
    """Whether ``answer`` (free text) states a value equal to ``reference``."""
    config = config or MathEquivalenceConfig()
    gold = _parse_reference(reference, config)
    if not gold:
        raise ValueError(f"math-verify cannot parse the reference {reference!r}")
    parsed = parse_answer(answer, config)
    return bool(parsed) and _verify([gold], parsed, config)


def parse_references(instance: Instance, config: MathEquivalenceConfig) -> list[Any]:
    """The parsed correct references of ``instance``; ``ValueError`` naming it when it has
    none or one cannot be parsed."""
    if not instance.gold_texts:
        raise ValueError(f"instance {instance.id!r} has no correct reference to compare with")
    parsed = []
    for text in instance.gold_texts:
        gold = _parse_reference(text, config)
        if not gold:
            raise ValueError(f"instance {instance.id!r}: math-verify cannot parse {text!r}")
        parsed.append(gold)
    return parsed


def _parse_reference(text: str, config: MathEquivalenceConfig) -> list[Any]:
    latex, expr = [LatexExtractionConfig(boxed_match_priority=0)], [ExprExtractionConfig()]
    delimited = any(d in text for d in _DELIMITERS)
    if config.gold_format == "expr":
        return _parse(text, expr, config)
    wrapped = text if delimited else f"${text}$"
    if config.gold_format == "latex":
        return _parse(wrapped, latex, config)
    return _parse(wrapped, latex + expr, config) or _parse(text, expr, config)


def parse_answer(text: str, config: MathEquivalenceConfig) -> list[Any]:
    """What math-verify extracts from a free-text answer (empty: nothing it could parse)."""
    priority = 0 if config.boxed_first else 50
    targets = [LatexExtractionConfig(boxed_match_priority=priority), ExprExtractionConfig()]
    text = _FINAL_PERIOD.sub(r"\1", text.strip())
    if _bare_latex(text):
        return _parse(f"${text}$", targets, config) or _parse(text, targets, config)
    return _parse(text, targets, config)


def _bare_latex(text: str) -> bool:
    """One line of LaTeX without math delimiters and without words (units are fine)."""
    if "\\" not in text or "\n" in text or any(d in text for d in _DELIMITERS):
        return False
    return not _WORD.search(_COMMAND.sub(" ", text))


def _timeout(config: MathEquivalenceConfig) -> int | None:
    # signal.alarm works only in the main thread; elsewhere math-verify must not set it.
    return config.timeout_s if threading.current_thread() is threading.main_thread() else None


def _parse(text: str, targets: list[Any], config: MathEquivalenceConfig) -> list[Any]:
    return parse(text, targets, parsing_timeout=_timeout(config))  # type: ignore[arg-type]


def _verify(golds: list[Any], parsed: list[Any], config: MathEquivalenceConfig) -> bool:
    return any(
        verify(
            gold,
            parsed,
            float_rounding=config.float_rounding,
            numeric_precision=config.numeric_precision,
            strict=config.strict,
            allow_set_relation_comp=config.allow_set_relation_comp,
            timeout_seconds=_timeout(config),
        )
        for gold in golds
    )
