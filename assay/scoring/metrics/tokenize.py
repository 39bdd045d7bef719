"""Word tokenization shared by the text-overlap and bias metrics.

HELM tokenizes with ``nltk.word_tokenize``: Punkt sentence splitting, then the Treebank-style
word tokenizer per sentence. Punkt needs a model file that is not installable from a package
registry, so sentences are split here with a fixed rule instead (after ``.``, ``!`` or ``?``
followed by whitespace). The word tokenizer is nltk's own, so tokens agree with HELM's except
around abbreviations Punkt knows (``Dr. Smith`` is one sentence to Punkt, two here); that only
changes whether a period stands alone as a token.

nltk's tokenizer runs some thirty regular-expression substitutions per sentence, most of which
cannot match a given text. :func:`word_tokenize` runs nltk's own compiled substitutions in
nltk's order but skips each one whose pattern needs a character the text does not hold, and
texts of plain words and simple punctuation skip the substitutions altogether, and sentences of
words joined by single spaces are tokenized a word at a time with each word's tokens remembered
(see :func:`_sentence_tokens`): the tokens are nltk's, several times faster.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nltk.tokenize import NLTKWordTokenizer

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

# Texts made only of ASCII words, whitespace, sentence-final periods, ``?``/``!`` and
# ``,``/``:`` before whitespace come out of nltk's substitutions with those marks spaced apart
# and nothing else changed. Anything else (quotes, apostrophes, brackets, inner periods,
# non-ASCII, the words nltk splits such as "cannot" or "gonna") takes the substitutions.
_NOT_PLAIN_CHAR = re.compile(r"[^A-Za-z0-9 \t\n,:?!.]")
_NOT_PLAIN_MARK = re.compile(r"\.(?![ \t\n]|\Z)|(?<![A-Za-z0-9])\.|[,:](?![ \t\n]|\Z)")
_SPLIT_WORDS = re.compile(r"cannot|gimme|gonna|gotta|lemme|wanna")  # on lowercased text
_SPACED_MARKS = str.maketrans({",": " , ", ":": " : ", "?": " ? ", "!": " ! ", ".": " . "})

# For each of nltk's substitutions, in nltk's order: the pattern it must be (so a changed nltk
# falls back to its own tokenizer) and the strings of which the text must hold at least one
# for the pattern to match (None: always run).
_STARTING_QUOTES = (
    ("([«“‘„]|[`]+)", ("«", "“", "‘", "„", "`")),
    ('^\\"', ('"',)),
    ("(``)", ("``",)),
    ("([ \\(\\[{<])(\\\"|\\'{2})", ('"', "''")),
    ("(?i)(?<!\\w)(\\')(?!(?:re|ve|ll|m|t|s|d|n)\\b)(?=\\w)", ("'",)),
)
_PUNCTUATION = (
    ("([^\\.])(\\.)([\\]\\)}>\"\\'»”’ ]*+)\\s*$", (".",)),
    ("([:,])([^\\d])", (":", ",")),
    ("([:,])$", (":", ",")),
    ("\\.{2,}", ("..",)),
    ("[;@#$%&]", (";", "@", "#", "$", "%", "&")),
    ("[\\u2012-\\u2015]", ("\u2012", "\u2013", "\u2014", "\u2015")),
    ("([^\\.])(\\.)([\\]\\)}>\"\\']*)\\s*$", (".",)),
    ("[?!]", ("?", "!")),
    ("([^'])' ", ("' ",)),
    ("[*]", ("*",)),
)
_PARENS = ("[\\]\\[\\(\\)\\{\\}\\<\\>]", ("[", "]", "(", ")", "{", "}", "<", ">"))
_DOUBLE_DASHES = ("--", ("--",))
_ENDING_QUOTES = (
    ("([»”’])", ("»", "”", "’")),
    ("''", ("''",)),
    ('"', ('"',)),
    ("\\s+", None),
    ("([^' ])('[sS]|'[mM]|'[dD]|') ", ("'",)),
    ("([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) ", ("'",)),
)
# Case-insensitive: the triggers are looked for in the lowercased text, and only in ASCII texts
# (re's IGNORECASE matches a few non-ASCII letters to ASCII ones, such as "ſ" to "s").
_CONTRACTIONS2 = (
    ("(?i)\\b(can)(?#X)(not)\\b", ("cannot",)),
    ("(?i)\\b(d)(?#X)('ye)\\b", ("d'ye",)),
    ("(?i)\\b(gim)(?#X)(me)\\b", ("gimme",)),
    ("(?i)\\b(gon)(?#X)(na)\\b", ("gonna",)),
    ("(?i)\\b(got)(?#X)(ta)\\b", ("gotta",)),
    ("(?i)\\b(lem)(?#X)(me)\\b", ("lemme",)),
    ("(?i)\\b(more)(?#X)('n)\\b", ("more'n",)),
    ("(?i)\\b(wan)(?#X)(na)(?=\\s)", ("wanna",)),
)
_CONTRACTIONS3 = (
    ("(?i) ('t)(?#X)(is)\\b", ("'tis",)),
    ("(?i) ('t)(?#X)(was)\\b", ("'twas",)),
)

Rule = tuple[Any, str, tuple[str, ...] | None]
_UNGUARDED_CHARS = 2000


@lru_cache(maxsize=1)
def _word_tokenizer() -> NLTKWordTokenizer:
    # nltk's package imports most of nltk (and scikit-learn): loaded when first needed.
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


def _bind(substitutions: list[tuple[Any, str]], expected: tuple) -> list[Rule] | None:
    if [p.pattern for p, _ in substitutions] != [pattern for pattern, _ in expected]:
        return None
    return [
        (p, repl, triggers)
        for (p, repl), (_, triggers) in zip(substitutions, expected, strict=True)
    ]


@lru_cache(maxsize=1)
def _rules() -> tuple[list[Rule], list[Rule]] | None:
    """nltk's substitutions with their triggers, or None when nltk's patterns have changed."""
    t = _word_tokenizer()
    contraction = r" \1 \2 "
    head = _bind(
        [*t.STARTING_QUOTES, *t.PUNCTUATION, t.PARENS_BRACKETS, t.DOUBLE_DASHES],
        (*_STARTING_QUOTES, *_PUNCTUATION, _PARENS, _DOUBLE_DASHES),
    )
    tail = _bind(
        [
            *t.ENDING_QUOTES,
            *((p, contraction) for p in t.CONTRACTIONS2),
            *((p, contraction) for p in t.CONTRACTIONS3),
        ],
        (*_ENDING_QUOTES, *_CONTRACTIONS2, *_CONTRACTIONS3),
    )
    if head is None or tail is None:
        return None
    return head, tail


def _apply(rules: list[Rule], text: str, probe: str | None = None) -> str:
    # nltk wraps its patterns with a wall-clock timeout against catastrophic backtracking,
    # and arming it costs about ten times a match on a sentence. Texts up to _UNGUARDED_CHARS
    # run the same compiled pattern without the timer (its backtracking is bounded by the
    # length); longer ones keep nltk's guard.
    unguarded = len(text) <= _UNGUARDED_CHARS
    for guarded, repl, triggers in rules:
        pattern = getattr(guarded, "_rx", guarded) if unguarded else guarded
        if triggers is None:
            text = pattern.sub(repl, text)
            continue
        seen = text if probe is None else probe
        for trigger in triggers:
            if trigger in seen:
                text = pattern.sub(repl, text)
                if probe is not None:
                    probe = seen = text.lower()
                break
    return text


def _nltk_sentence(text: str) -> list[str]:
    """``NLTKWordTokenizer().tokenize(text)``, skipping substitutions that cannot match."""
    rules = _rules()
    if rules is None:
        return _word_tokenizer().tokenize(text)
    head, tail = rules
    text = " " + _apply(head, text) + " "
    n_ending = len(_ENDING_QUOTES)
    text = _apply(tail[:n_ending], text)
    if text.isascii():
        text = _apply(tail[n_ending:], text, probe=text.lower())
    else:
        text = _apply([(p, r, None) for p, r, _ in tail[n_ending:]], text)
    return text.split()


# nltk's substitutions look at most one space past a word, except where the text starts or
# ends, so a sentence of words joined by single spaces is tokenized word by word: each word in
# a context of a neighbour "x" where the sentence has one (the tokens of the "x" dropped), and
# a word's tokens are remembered. The one rule that reaches across words is the final-period
# rule, whose run of closing marks and spaces to the end can start in an earlier word when the
# last word is only such marks: those sentences are tokenized whole.
_CLOSERS = frozenset("])}>\"'»”’")
_WORD_CACHE_LIMIT = 50_000  # per place: tens of MiB at most
_word_tokens: tuple[dict[str, list[str]], ...] = ({}, {}, {})  # first, middle and last word
_CONTEXTS = (("", " x", 0, -1), ("x ", " x", 1, -1), ("x ", "", 1, None))


def _word_in_context(word: str, place: int) -> list[str]:
    cache = _word_tokens[place]
    tokens = cache.get(word)
    if tokens is None:
        before, after, first, end = _CONTEXTS[place]
        tokens = _nltk_sentence(before + word + after)[first:end]
        if len(cache) >= _WORD_CACHE_LIMIT:
            cache.clear()
        cache[word] = tokens
    return tokens


def _sentence_tokens(sentence: str) -> list[str]:
    """``_nltk_sentence(sentence)``, word by word where that gives the same tokens."""
    words = sentence.split(" ")
    if (
        len(words) < 2
        or len(sentence.split()) != len(words)  # other whitespace, or not single spaces
        or _CLOSERS.issuperset(words[-1])
    ):
        return _nltk_sentence(sentence)
    tokens = _word_in_context(words[0], 0).copy()
    for word in words[1:-1]:
        tokens += _word_in_context(word, 1)
    tokens += _word_in_context(words[-1], 2)
    return tokens


def _is_plain(text: str) -> bool:
    if _NOT_PLAIN_CHAR.search(text):
        return False
    if ("." in text or "," in text or ":" in text) and _NOT_PLAIN_MARK.search(text):
        return False
    low = text.lower()
    # Each word nltk splits holds a double letter; most texts have none of these.
    return not (("nn" in low or "mm" in low or "tt" in low) and _SPLIT_WORDS.search(low))


def word_tokenize(text: str) -> list[str]:
    """Split ``text`` into words and punctuation, like ``nltk.word_tokenize`` (see module doc)."""
    if _is_plain(text):
        return text.translate(_SPACED_MARKS).split()
    return [
        token
        for sentence in _SENTENCE_END.split(text)
        if sentence.strip()
        for token in _sentence_tokens(sentence)
    ]
