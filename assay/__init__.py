"""assay: holistic evaluation of language models, joined to a model and prompt registry.

This package is plain Python and knows nothing of Dagster; the Dagster layer (``assets/``,
``resources/``, ``sensors/``, ``definitions.py``) wraps it.
"""

__version__ = "0.1.0"
