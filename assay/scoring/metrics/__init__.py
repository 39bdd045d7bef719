"""Holistic metrics: accuracy, calibration, bias, toxicity, efficiency and their aggregation.

Plain functions over plain values (strings, floats, ``assay.core.records`` types). A metric that
cannot be computed for a given input returns :class:`~assay.scoring.metrics.absent.Absent` with a
reason, never a zero that would read as a real score.
"""

from assay.scoring.metrics.absent import Absent, is_absent

__all__ = ["Absent", "is_absent"]
