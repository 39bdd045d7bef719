"""Comparison of model versions: paired leaderboards, the standings of a day, the promotion gate."""
