"""The nltk data assay ships: found without ~/nltk_data or a download, in this process and in
a child process through NLTK_DATA, and it is Punkt's English model (abbreviations known)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from assay.core.nltk_data import NLTK_DATA_DIR, nltk_data_env, use_bundled_nltk_data

# "Dr." and "Mr." are in Punkt's English abbreviation list, so they end no sentence; a plain
# split at ". " would find five sentences here.
TEXT = "Dr. Jones met Mr. Smith in Washington. They talked for an hour. Then they left!"


def _run(code: str, env: dict[str, str], tmp_path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _bare_env(tmp_path) -> dict[str, str]:
    """No nltk data anywhere nltk looks by default: an empty home, no NLTK_DATA."""
    env = {k: v for k, v in os.environ.items() if k != "NLTK_DATA"}
    env["HOME"] = str(tmp_path)
    env["PYTHONPATH"] = os.getcwd()
    return env


def test_shipped_folder_holds_the_english_punkt_tables():
    english = NLTK_DATA_DIR / "tokenizers" / "punkt_tab" / "english"
    names = sorted(p.name for p in english.iterdir())
    assert names == [
        "abbrev_types.txt",
        "collocations.tab",
        "ortho_context.tab",
        "sent_starters.txt",
    ]
    abbreviations = (english / "abbrev_types.txt").read_text().split("\n")
    assert {"dr", "mr", "mrs", "u.s"} <= set(abbreviations)


def test_without_the_shipped_data_nltk_cannot_split_sentences(tmp_path):
    # The control: proves the other tests do not pass on data found elsewhere.
    code = f"""
        import nltk
        try:
            nltk.sent_tokenize({TEXT!r})
        except LookupError:
            print("missing")
    """
    done = _run(code, _bare_env(tmp_path), tmp_path)
    assert done.stdout.strip() == "missing", done.stderr


def test_use_bundled_nltk_data_lets_lm_evals_ifeval_tokenize(tmp_path):
    code = f"""
        from assay.core.nltk_data import use_bundled_nltk_data
        use_bundled_nltk_data()
        use_bundled_nltk_data()  # twice: still one entry, still first
        import nltk
        from lm_eval.tasks.ifeval import instructions_util
        print(nltk.data.path.count(str(use_bundled_nltk_data())), nltk.data.path[0])
        print(instructions_util.count_sentences({TEXT!r}))
        print(len(nltk.word_tokenize({TEXT!r})))
    """
    done = _run(code, _bare_env(tmp_path), tmp_path)
    assert done.returncode == 0, done.stderr
    path_line, sentences, words = done.stdout.strip().splitlines()[-3:]
    assert path_line == f"1 {NLTK_DATA_DIR}"
    assert sentences == "3"
    # "Dr." "Jones" "met" "Mr." "Smith" "in" "Washington" "." (8), "They" "talked" "for" "an"
    # "hour" "." (6), "Then" "they" "left" "!" (4)
    assert words == "18"
    assert "Downloaded punkt_tab" not in done.stdout


def test_nltk_data_env_reaches_a_child_process(tmp_path):
    env = nltk_data_env(_bare_env(tmp_path) | {"NLTK_DATA": "/elsewhere"})
    assert env["NLTK_DATA"].split(os.pathsep) == [str(NLTK_DATA_DIR), "/elsewhere"]
    code = f"""
        import nltk
        print(len(nltk.sent_tokenize({TEXT!r})))
    """
    done = _run(code, env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3"


def test_use_bundled_nltk_data_returns_the_shipped_folder():
    import nltk

    assert use_bundled_nltk_data() == NLTK_DATA_DIR
    assert nltk.data.path[0] == str(NLTK_DATA_DIR)
