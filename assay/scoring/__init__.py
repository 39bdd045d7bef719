"""Scoring: per-instance stats from stored model outputs, the scorecard of the metric families,
and LLM-as-judge scores. Never calls the evaluated model."""
