"""Bridges to other tools' stores (MLflow)."""
