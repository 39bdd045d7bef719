"""Contamination checks: which test items a model version may have seen in training."""
