"""Statistics for comparing models: clustered bootstrap, paired tests, multiple comparisons,
anytime-valid sequential tests."""

from assay.stats.corrections import benjamini_hochberg, holm
from assay.stats.paired import (
    Comparison,
    PairedResult,
    adjust,
    compare,
    mcnemar_exact,
    paired_bootstrap,
    paired_permutation_test,
)
from assay.stats.resampling import bootstrap_interval, bootstrap_means, percentile_interval
from assay.stats.sequential import (
    ABOVE,
    BELOW,
    UNDECIDED,
    SequentialTest,
    confidence_sequence,
    running_pvalues,
    sequential_test,
    sequential_verdicts,
    verdicts_from_pvalues,
)

__all__ = [
    "ABOVE",
    "BELOW",
    "UNDECIDED",
    "Comparison",
    "PairedResult",
    "SequentialTest",
    "adjust",
    "benjamini_hochberg",
    "bootstrap_interval",
    "bootstrap_means",
    "compare",
    "confidence_sequence",
    "holm",
    "mcnemar_exact",
    "paired_bootstrap",
    "paired_permutation_test",
    "percentile_interval",
    "running_pvalues",
    "sequential_test",
    "sequential_verdicts",
    "verdicts_from_pvalues",
]
