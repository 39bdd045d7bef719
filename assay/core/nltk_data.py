"""nltk data shipped inside assay, so nothing is downloaded at run time.

lm-evaluation-harness's IFEval checks split sentences and words with nltk's Punkt tokenizer,
whose parameters (the ``punkt_tab`` package) nltk does not install: lm-eval downloads them
when its module is imported, which fails without internet, and the checks then raise. assay
ships the English ``punkt_tab`` under ``assay/core/data/nltk_data`` (its source, licence and
digests in ``SOURCE.md`` there) and puts that folder first on nltk's search path before
anything imports lm-eval's IFEval code. First, so that every machine tokenizes with the same
parameters whatever else is installed in ``~/nltk_data``.

A child process (a peer's interpreter) gets the folder through ``NLTK_DATA``
(:func:`nltk_data_env`).
"""

from __future__ import annotations

import os
from pathlib import Path

NLTK_DATA_DIR = Path(__file__).resolve().parent / "data" / "nltk_data"
# What assay's callers need; checked by :func:`use_bundled_nltk_data`.
REQUIRED = ("tokenizers/punkt_tab/english/",)


def use_bundled_nltk_data() -> Path:
    """Put the shipped nltk data first on nltk's search path (once) and return its folder.

    Raises ``FileNotFoundError`` naming the missing resource when the package was installed
    without its data files.
    """
    import nltk

    for resource in REQUIRED:
        if not (NLTK_DATA_DIR / resource).is_dir():
            raise FileNotFoundError(
                f"assay's nltk data is missing {resource!r} under {NLTK_DATA_DIR}; "
                "reinstall assay with its package data"
            )
    folder = str(NLTK_DATA_DIR)
    if not nltk.data.path or nltk.data.path[0] != folder:
        if folder in nltk.data.path:
            nltk.data.path.remove(folder)
        nltk.data.path.insert(0, folder)
    return NLTK_DATA_DIR


def nltk_data_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """``environ`` (default: this process's) with the shipped folder first in ``NLTK_DATA``."""
    env = dict(os.environ if environ is None else environ)
    rest = [p for p in env.get("NLTK_DATA", "").split(os.pathsep) if p and p != str(NLTK_DATA_DIR)]
    env["NLTK_DATA"] = os.pathsep.join([str(NLTK_DATA_DIR), *rest])
    return env
