"""Word tokenization shared by the text-overlap and bias metrics.

HELM tokenizes with ``nltk.word_tokenize``: Punkt sentence splitting, then the Treebank-style
word tokenizer per sentence. Punkt needs a model file that is not installable from a package
registry, so sentences are split here with a fixed rule instead (after ``.``, ``!`` or ``?``
followed by whitespace). The word tokenizer is nltk's own, so tokens agree with HELM's except
around abbreviations Punkt knows (``Dr. Smith`` is one sentence to Punkt, two here); that only
changes whether a period stands alone as a token.
"""

from __future__ import annotations

import re
from functools import lru_cache

from nltk.tokenize import NLTKWordTokenizer

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@lru_cache(maxsize=1)
def _word_tokenizer() -> NLTKWordTokenizer:
    return NLTKWordTokenizer()


def word_tokenize(text: str) -> list[str]:
    """Split ``text`` into words and punctuation, like ``nltk.word_tokenize`` (see module doc)."""
    tokenizer = _word_tokenizer()
    return [
        token
        for sentence in _SENTENCE_END.split(text)
        if sentence.strip()
        for token in tokenizer.tokenize(sentence)
    ]
