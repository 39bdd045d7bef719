"""The real aclImdb slice (``fixtures/datasets/stanfordnlp__imdb``) as its tests read it."""

from __future__ import annotations

from pathlib import Path

ACL_IMDB = Path(__file__).parent / "fixtures" / "datasets" / "stanfordnlp__imdb" / "aclImdb"


def acl_imdb_reviews(split: str) -> list[tuple[str, int, str]]:
    """(review, label, text) of a split folder: ``neg/`` (0) then ``pos/`` (1), each by review
    id; ``review`` is ``<polarity>/<id>_<rating>``."""
    reviews = []
    for label, polarity in enumerate(("neg", "pos")):
        files = sorted(
            (ACL_IMDB / split / polarity).iterdir(), key=lambda f: int(f.stem.split("_")[0])
        )
        reviews += [(f"{polarity}/{f.stem}", label, f.read_text(encoding="utf-8")) for f in files]
    return reviews


def acl_imdb_hub_rows(split: str) -> list[dict]:
    """The same reviews as the Hub's rows (what its builder makes of the files)."""
    return [{"text": text, "label": label} for _, label, text in acl_imdb_reviews(split)]
