"""Statistics for comparing models: clustered bootstrap, paired tests, multiple comparisons."""

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

__all__ = [
    "Comparison",
    "PairedResult",
    "adjust",
    "benjamini_hochberg",
    "bootstrap_interval",
    "bootstrap_means",
    "compare",
    "holm",
    "mcnemar_exact",
    "paired_bootstrap",
    "paired_permutation_test",
    "percentile_interval",
]
