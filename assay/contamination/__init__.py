"""Contamination checks: which evaluation instances a model may have seen in training.

``normalize`` (words and hashed n-grams), ``corpus`` (a declared training corpus),
``ngram_index`` (its n-gram index, built once, streamed), ``overlap`` (the published
n-gram overlap definitions: GPT-3's 13-grams, PaLM's 70% of 8-grams, Llama 2's token spans),
``membership`` (model-based signals when no corpus is declared: Min-K% Prob, guided
completion), ``subsets`` and ``clean`` (the clean subset and its scores).
"""
