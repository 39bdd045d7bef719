"""Contamination checks: which test items a model version may have seen in training.

``corpus`` (a declared training corpus), ``normalize`` and ``ngram_index`` (its n-gram index,
built once per content digest), ``overlap`` (the published n-gram overlap definitions),
``membership`` (model-based signals when no corpus is declared), ``declared`` (a version's
recorded corpora and their indexes), ``check`` and ``table`` (the ``contamination`` table),
``config`` (the suite's ``contamination:`` block), ``subsets`` and ``clean`` (the clean subset
and its scores).
"""
