"""One ``contamination`` partition: the findings of every check on a scenario's eval instances.

What is checked is an instance's text as a model would have seen it in a leaked copy of the
benchmark: its input, then each reference's text, one per line (:func:`instance_text`).
Checking the input alone would miss a test set leaked with its answers; the references are
short, so they add few n-grams to the fractions of PaLM's and Llama 2's rules.

- With declared corpora (the version's ``training_corpora``): the three overlap detectors
  against each corpus's index (``find_overlaps_many``), one row per instance × detector ×
  corpus.
- Without, and only when the suite asks (``contamination.model_based``): Min-K% Prob of each
  instance against its perturbed copies, and guided completion when ``guided`` is on.
- Otherwise: no rows ("not checked").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from assay.contamination.config import ContaminationConfig
from assay.contamination.declared import DeclaredCorpus
from assay.contamination.membership import guided_completion, min_k_membership
from assay.contamination.ngram_index import CorpusIndex
from assay.contamination.overlap import find_overlaps_many
from assay.contamination.table import contamination_table, empty_table
from assay.core.records import Instance


def instance_text(instance: Instance) -> str:
    """The text checked for one instance: the input, then each reference's text."""
    return "\n".join([instance.input, *(ref.text for ref in instance.references)])


def overlap_rows(
    instances: Sequence[Instance], corpus: DeclaredCorpus, index: CorpusIndex
) -> list[dict[str, Any]]:
    """The overlap findings of every instance against one corpus, as table rows."""
    findings = find_overlaps_many([instance_text(i) for i in instances], index)
    return [
        {
            "instance_id": instance.id,
            "detector": f.detector,
            "corpus": corpus.name,
            "corpus_digest": corpus.digest,
            "score": float(f.score),
            "flagged": bool(f.flagged),
            "label": f.label,
            "evidence": f.evidence,
        }
        for instance, found in zip(instances, findings, strict=True)
        for f in found
    ]


def membership_rows(findings: Sequence[Any]) -> list[dict[str, Any]]:
    """Rows of the model-based findings (``assay.contamination.membership``)."""
    return [
        {
            "instance_id": f.instance_id,
            "detector": f.detector,
            "corpus": "",
            "corpus_digest": "",
            "score": float(f.score),
            "flagged": bool(f.flagged),
            "label": f.label,
            "evidence": f.evidence,
        }
        for f in findings
    ]


@dataclass(frozen=True)
class CheckedPartition:
    """A ``contamination`` partition and what produced it."""

    table: pa.Table
    mode: str  # "overlap", "model_based" or "not_checked"
    corpora: dict[str, str] = field(default_factory=dict)  # name → digest checked against
    figures: dict[str, Any] = field(default_factory=dict)  # scenario-level test figures

    def flagged_instances(self, detectors: Sequence[str]) -> set[str]:
        """Instances a row of ``detectors`` flags."""
        return {
            row["instance_id"]
            for row in self.table.to_pylist()
            if row["flagged"] and row["detector"] in detectors
        }

    def summary(self, instances: int, detectors: Sequence[str]) -> dict[str, Any]:
        """What the Dagster UI shows for the partition."""
        flagged = len(self.flagged_instances(detectors))
        return {
            "mode": self.mode,
            "instances": instances,
            "flagged_instances": flagged,
            "contamination_rate": (flagged / instances)
            if instances and self.table.num_rows
            else None,
            "corpora": dict(self.corpora),
            "rows": self.table.num_rows,
        }


def check_overlap(
    instances: Sequence[Instance],
    corpora: Sequence[DeclaredCorpus],
    open_index: Callable[[DeclaredCorpus], CorpusIndex],
) -> CheckedPartition:
    """The overlap findings of ``instances`` against every declared corpus."""
    rows: list[dict[str, Any]] = []
    for corpus in corpora:
        rows += overlap_rows(instances, corpus, open_index(corpus))
    return CheckedPartition(
        contamination_table(rows), "overlap", {c.name: c.digest for c in corpora}
    )


def check_partition(
    instances: Sequence[Instance],
    corpora: Sequence[DeclaredCorpus] | None,
    config: ContaminationConfig,
    open_index: Callable[[DeclaredCorpus], CorpusIndex],
    membership: Callable[[ContaminationConfig], tuple[list[Any], dict[str, Any]]] | None = None,
) -> CheckedPartition:
    """The partition for ``instances`` under ``config`` (module docstring).

    ``corpora``: the version's recorded corpora (None when none were recorded);
    ``membership``: runs the model-based detectors and returns their findings and figures
    (given by the caller, which owns the model client).
    """
    if not config.enabled:
        return CheckedPartition(empty_table(), "not_checked")
    if corpora:
        return check_overlap(instances, corpora, open_index)
    if config.runs_membership and membership is not None and corpora is not None:
        findings, figures = membership(config)
        return CheckedPartition(
            contamination_table(membership_rows(findings)), "model_based", figures=figures
        )
    return CheckedPartition(empty_table(), "not_checked")


def run_membership(
    client: Any, instances: Sequence[Instance], config: ContaminationConfig, entry: Any
) -> tuple[list[Any], dict[str, Any]]:
    """The model-based detectors on ``instances`` (``assay.contamination.membership``):
    Min-K% Prob always, guided completion when ``config.guided``; findings and figures.

    Min-K% compares each instance with the membership library's own meaning-preserving
    rewrites (fillers, synonyms), not the suite's perturbations: a perturbation that makes
    any text unlikely (typos) would hide the signal."""
    findings, figures = min_k_membership(
        client, instances, None, k=config.min_k, alpha=config.alpha
    )
    findings = list(findings)
    out = {"min_k_prob": figures}
    if config.guided:
        guided, guided_figures = guided_completion(
            client,
            instances,
            dataset_name=entry.scenario,
            split=entry.eval_split,
            alpha=config.alpha,
        )
        findings += list(guided)
        out["guided_completion"] = guided_figures
    return findings, out
