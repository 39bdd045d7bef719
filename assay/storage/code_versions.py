"""Each stored table's code version: a digest of the library sources that define it.

Dagster marks a table stale when its asset's ``code_version`` differs from the one its last
materialization recorded, and a backfill of stale partitions rebuilds it. Typed version
numbers drift (a metric changed without a bump leaves tables marked fresh); here the version
is derived from the bytes of the listed sources, so changing any of them marks exactly the
tables whose list names it.

``SOURCES`` is the one place that says what defines each table: paths under the ``assay``
package, a folder standing for every file below it (code and data: lexicons, templates).
A listed path that does not exist is an error, so a rename cannot silently drop a source.
The Dagster layer (``assets/``) is left out: changing an asset's wiring or metadata does not
change its data.

Any byte counts, a comment included: a needless rescoring is cheap (scoring never calls a
model) and a needless re-evaluation is answered by the request cache, while a missed change
would leave stale numbers marked fresh. The suite file and the datasets are data per
partition, not code: they are not part of these digests.

Beyond assay's sources, a table's version covers what else computes it:
- ``PLUGIN_GROUPS``: every installed distribution declaring entry points of the plugin groups
  that feed the table (``assay.core.plugins``), by name, version and a digest of its files.
  Upgrading, editing or installing a scorer plugin changes the version of ``instance_scores``
  and ``metric_tables`` (and nothing else), so Dagster marks them stale and a backfill of them
  rescores every partition from the stored outputs; a scenario plugin does the same for
  ``scenario_instances``. Dagster keeps one code version per asset, read when the code
  location loads: every installed plugin of a group counts, whichever suite entries name it.
- ``PACKAGES``: third-party libraries whose version decides the numbers (math-verify and the
  LaTeX parser and SymPy under it; lm-eval, nltk and langdetect behind ``ifeval``), by
  installed version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from assay.core.plugins import (
    SCENARIOS_GROUP,
    SCORERS_GROUP,
    DistributionVersion,
    plugin_distributions,
)
from assay.storage.contract import (
    CONTAMINATION,
    CORPUS_INDEX,
    DASHBOARD,
    INSTANCE_SCORES,
    METRIC_TABLES,
    MODEL_OUTPUTS,
    PERTURBED_INSTANCES,
    PROMPT_TRIALS,
    RANKINGS,
    REGISTERED_MODELS,
    SCENARIO_INSTANCES,
    TRAINING_CORPORA,
)

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # the ``assay`` package

_RECORDS = ("core/records.py", "core/digests.py")
# An lm-eval task's objects, documents and requests (``scenario: lm_eval``).
_LM_EVAL = (
    "scenarios/lm_eval_tasks.py",
    "scenarios/lm_eval_data.py",
    "scenarios/lm_eval_requests.py",
    "scenarios/lm_eval_chat.py",
    "scenarios/files.py",
)
# Per-instance stats: the metrics and the judges that produce them.
_INSTANCE_STATS = (
    *_RECORDS,
    "scoring/instance_stats.py",
    "scoring/metrics",
    "scoring/judge.py",
    "scoring/judge_scores.py",
    "scoring/scorecard.py",
    "scoring/partition.py",
    # The entry's scorer: the protocol, how its stats become rows, and the built-ins.
    "core/plugins.py",
    "core/scorers.py",
    "scoring/scorer_runs.py",
    "scoring/samples.py",
    "scoring/code_execution.py",
    "scoring/math_equivalence.py",
    "scoring/ifeval.py",
    "scenarios/ifeval.py",
    "core/nltk_data.py",
    "core/data/nltk_data",
    "core/sandbox.py",
    # lm-eval tasks: their requests are rebuilt and scored by lm-eval's own code.
    *_LM_EVAL,
    "scoring/lm_eval_scores.py",
    # MATH-hard's process_results, run in lm-eval's environment.
    "scoring/lm_eval_peer.py",
    # The defaults of an entry's scorer settings (code execution, judges) live here.
    "evaluate/suite.py",
    "perturbations/__init__.py",
    # Which instances a contamination check flags, and the clean-subset rows.
    "contamination/subsets.py",
    "contamination/clean.py",
)

SOURCES: Mapping[str, tuple[str, ...]] = {
    REGISTERED_MODELS: (
        *_RECORDS,
        "registry/resolved.py",
        "models/transformers_loading.py",
        "models/openai_backend.py",
    ),
    SCENARIO_INSTANCES: (*_RECORDS, "core/plugins.py", "scenarios"),
    PERTURBED_INSTANCES: (*_RECORDS, "perturbations", "evaluate/run.py"),
    MODEL_OUTPUTS: (
        *_RECORDS,
        "core/pinned_prices.py",
        "adapters",
        "perturbations",
        "models",
        "evaluate/run.py",
        "evaluate/partition.py",
        *_LM_EVAL,
    ),
    INSTANCE_SCORES: _INSTANCE_STATS,
    # The scorecard: the stats above, summarized with intervals, plus partition-level figures.
    METRIC_TABLES: (
        *_INSTANCE_STATS,
        "core/pinned_prices.py",
        "scoring/summary.py",
        "scoring/families.py",
        "scoring/intervals.py",
        "scoring/aggregate.py",
        "stats",
    ),
    RANKINGS: (
        *_RECORDS,
        "compare/ranking.py",
        "compare/family_figures.py",
        "compare/standings.py",
        "contamination/clean.py",
        "scoring/metrics/directions.py",
        "stats",
        "storage/parquet.py",
        "storage/query.py",
    ),
    DASHBOARD: (
        *_RECORDS,
        "report",
        "compare",
        "contamination/subsets.py",
        "contamination/clean.py",
        "scoring/metrics/directions.py",
        "scoring/metrics/calibration.py",
        "stats",
    ),
}

# Contamination: the declared corpora's digests, their indexes, and the findings.
_CORPUS_INDEX = (
    "contamination/declared.py",
    "contamination/corpus.py",
    "contamination/normalize.py",
    "contamination/ngram_index.py",
)
SOURCES = {
    **SOURCES,
    # The digests: the manifest's checks and the corpus reader.
    TRAINING_CORPORA: (
        "registry/training_data.py",
        "contamination/declared.py",
        "contamination/corpus.py",
    ),
    CORPUS_INDEX: _CORPUS_INDEX,
    # The findings: overlap against each index, or the model-based signals; the table's rules
    # and the suite block's switches.
    CONTAMINATION: (
        *_RECORDS,
        *_CORPUS_INDEX,
        "evaluate/run.py",
        "contamination/overlap.py",
        "contamination/membership.py",
        # What the model-based signals compute with: log-probabilities, rewrites, ROUGE-L,
        # the paired tests.
        "models/prompt_logprobs.py",
        "perturbations",
        "scoring/metrics/accuracy.py",
        "stats",
        "contamination/check.py",
        "contamination/table.py",
        "contamination/config.py",
    ),
}

# A prompt trial: the outputs and the scores, with the prompt version pinned in the layouts.
SOURCES = {
    **SOURCES,
    PROMPT_TRIALS: tuple(
        dict.fromkeys(
            (
                *SOURCES[MODEL_OUTPUTS],
                *SOURCES[METRIC_TABLES],
                "evaluate/registry_prompts.py",
                "evaluate/prompt_trials.py",
            )
        )
    ),
}

# The plugin groups whose installed distributions define each table.
PLUGIN_GROUPS: Mapping[str, tuple[str, ...]] = {
    SCENARIO_INSTANCES: (SCENARIOS_GROUP,),
    INSTANCE_SCORES: (SCORERS_GROUP,),
    METRIC_TABLES: (SCORERS_GROUP,),
    PROMPT_TRIALS: (SCORERS_GROUP,),
}
# Libraries whose installed version decides a table's numbers.
_MATH = ("math-verify", "latex2sympy2_extended", "sympy")
# The ifeval scorer's checks are lm-eval's, tokenizing with nltk and detecting languages
# with langdetect.
_IFEVAL = ("lm-eval", "nltk", "langdetect")
# lm-eval's version decides an lm-eval task's documents, requests and scores (its task YAMLs
# and functions ship inside it); each partition's own task config digest is in its revision.
PACKAGES: Mapping[str, tuple[str, ...]] = {
    SCENARIO_INSTANCES: ("lm-eval",),
    MODEL_OUTPUTS: ("lm-eval",),
    INSTANCE_SCORES: (*_MATH, *_IFEVAL),
    METRIC_TABLES: (*_MATH, *_IFEVAL),
    PROMPT_TRIALS: (*_MATH, *_IFEVAL),
}


def _files(entry: str, root: Path) -> list[Path]:
    path = root / entry
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and "__pycache__" not in p.parts
            and not p.name.startswith(".")
            and p.suffix not in (".pyc", ".pyo")
        )
    raise ValueError(f"code version source {entry!r} does not exist under {root}")


def source_digest(entries: Iterable[str], root: Path = PACKAGE_ROOT) -> str:
    """A digest of the listed sources' paths and bytes (16 hex digits)."""
    digest = hashlib.sha256()
    files = {p for entry in entries for p in _files(entry, root)}
    for path in sorted(files):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def package_versions(names: Iterable[str]) -> list[str]:
    """``name==version`` of each library (``name==absent`` when it is not installed)."""
    out = []
    for name in names:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            out.append(f"{name}==absent")
    return out


def derive_code_version(
    sources: str, packages: Sequence[str] = (), plugins: Sequence[DistributionVersion] = ()
) -> str:
    """A table's version from its sources' digest, library versions and plugin distributions
    (the sources' digest alone when there are neither)."""
    if not packages and not plugins:
        return sources
    lines = [sources, *packages, *(str(p) for p in plugins)]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def dependencies(asset: str) -> tuple[list[str], list[DistributionVersion]]:
    """The library versions and the plugin distributions that enter ``asset``'s version."""
    groups = PLUGIN_GROUPS.get(asset, ())
    plugins = plugin_distributions(groups) if groups else []
    return package_versions(PACKAGES.get(asset, ())), plugins


@cache
def code_version(asset: str) -> str:
    """The code version of ``asset``'s table: the sources ``SOURCES`` lists for it, the
    libraries ``PACKAGES`` lists and the installed plugins of its ``PLUGIN_GROUPS``, as they
    are when first asked (the code location's load)."""
    if asset not in SOURCES:
        raise KeyError(f"no code version sources are listed for asset {asset!r}")
    packages, plugins = dependencies(asset)
    return derive_code_version(source_digest(SOURCES[asset]), packages, plugins)
