"""lm-eval's ``process_results`` run in lm-eval's own environment, for tasks assay's cannot
score in process.

Some lm-eval tasks check answers with SymPy's LaTeX parser (``sympy.parsing.latex``), which
runs only on ANTLR runtime 4.11 (lm-eval's ``math`` extra): MATH-hard of the Open LLM
Leaderboard (``leaderboard_math_hard``). (``minerva_math``'s module asserts ANTLR 4.11 when
it is imported, so its tasks cannot even be built in assay's environment.) assay's has ANTLR
4.13.2, the runtime math-verify's parser is right on: math-verify 0.9 pins
latex2sympy2_extended 1.11.0, whose parser for ANTLR 4.11 is generated from an older grammar
(it fails on ``25\\%`` with an AttributeError and reads it as 25), so one runtime cannot serve
both. In process, such a task's ``process_results`` would not fail: SymPy's parser raises an
ImportError that lm-eval's code catches, and every answer that needs the parser would score
0 without a word. So assay builds the task and its requests in its own environment and sends
the documents and filtered answers of those tasks to the lm-eval peer environment
(``$ASSAY_LMEVAL_VENV``, else ``.peers/lmeval-venv``; ``make lmeval-venv`` builds it with
``lm-eval[hf,math]``), where lm-eval's own function scores them, as lm-eval run as itself
would.

The child runs the very function the task names: the same file of the same lm-eval version
(the file's SHA-256 and lm-eval's version are checked there before anything is scored). It
reports the versions of the packages that decide the numbers (ANTLR, SymPy, math-verify,
latex2sympy2_extended) with the results (:class:`PeerScores`). Before scoring, the child parses
and simplifies one LaTeX expression: the first parse of a process takes over a second, longer
than the 1-second alarm of lm-eval's Minerva check, which would score the first answer that
needs it 0.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import json
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VENV_ENV = "ASSAY_LMEVAL_VENV"
DEFAULT_VENV = Path(".peers") / "lmeval-venv"
_LATEX_PARSER = "sympy.parsing.latex"
_ANTLR = "antlr4-python3-runtime"
PEER_PACKAGES = ("lm_eval", _ANTLR, "sympy", "math-verify", "latex2sympy2_extended")

# Runs in lm-eval's environment. stdin: the job (JSON); stdout: the results (JSON).
_DRIVER = r"""
import hashlib, importlib.metadata, importlib.util, json, logging, sys
logging.disable(logging.CRITICAL)
job = json.load(sys.stdin)
import lm_eval
from pathlib import Path
version = importlib.metadata.version("lm_eval")
if version != job["lm_eval_version"]:
    sys.exit(f"lm-eval here is {version}; assay's is {job['lm_eval_version']}")
path = Path(lm_eval.__file__).resolve().parent / job["module"]
if not path.is_file():
    sys.exit(f"lm-eval here has no {job['module']}")
digest = hashlib.sha256(path.read_bytes()).hexdigest()
if digest != job["module_sha256"]:
    sys.exit(f"{path} differs from assay's copy (SHA-256 {digest[:16]})")
spec = importlib.util.spec_from_file_location("assay_peer_task_module", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
function = getattr(module, job["function"])
# The first LaTeX parse and simplification of a process takes over a second (the parser's
# tables are built), longer than the 1-second alarm of lm-eval's Minerva check: done once
# here, so no answer is timed out for being the first.
source = path.read_text(encoding="utf-8")
if "sympy.parsing.latex" in source:
    import sympy
    from sympy.parsing.latex import parse_latex
    sympy.simplify(parse_latex(r"\frac{1}{2}") - parse_latex(r"\sqrt{4}"))
if "math_verify" in source:
    from math_verify import parse, verify
    verify(parse(r"$\frac{1}{2}$"), parse("$0.5$"))
versions = {}
for name in job["packages"]:
    try:
        versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        versions[name] = "absent"
results = [function(doc, answers) for doc, answers in job["items"]]
json.dump({"versions": versions, "results": results}, sys.stdout)
"""


class LmEvalPeerError(RuntimeError):
    """The lm-eval peer environment is missing, or failed on a job."""


@dataclass(frozen=True)
class PeerScores:
    """``process_results``'s answers from the peer, in the order asked, and the versions
    of the packages that computed them."""

    results: list[dict[str, Any]]
    versions: dict[str, str]

    @property
    def label(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(self.versions.items()))


def _module_path(function: Callable[..., Any]) -> Path | None:
    try:
        source = inspect.getsourcefile(function)
    except TypeError:
        return None
    return Path(source).resolve() if source else None


def latex_parser_usable_here() -> bool:
    """Whether SymPy's LaTeX parser runs in this environment (ANTLR runtime 4.11)."""
    try:
        return importlib.metadata.version(_ANTLR).startswith("4.11")
    except importlib.metadata.PackageNotFoundError:
        return False


def needs_peer(task: Any) -> bool:
    """Whether ``task``'s ``process_results`` must run in the lm-eval peer: its module uses
    SymPy's LaTeX parser, which cannot run here."""
    function = getattr(getattr(task, "config", None), "process_results", None)
    if not callable(function):
        return False
    path = _module_path(function)
    if path is None or not path.is_file():
        return False
    return _LATEX_PARSER in path.read_text(encoding="utf-8") and not latex_parser_usable_here()


def peer_python() -> Path:
    """The peer's interpreter: ``$ASSAY_LMEVAL_VENV``, else ``.peers/lmeval-venv`` here."""
    configured = os.environ.get(VENV_ENV)
    venv = Path(configured) if configured else DEFAULT_VENV
    python = venv / "bin" / "python"
    if not python.is_file():
        where = f"{VENV_ENV}={configured}" if configured else f"{VENV_ENV} is unset and {venv}"
        raise LmEvalPeerError(
            f"{where} has no Python interpreter ({python}); build lm-eval's environment with "
            f"`make lmeval-venv` (lm-eval[hf,math]) or point {VENV_ENV} at one"
        )
    return python


def require_peer(task_name: str) -> Path:
    """The peer's interpreter, or an error saying the task needs it and how to get it."""
    try:
        return peer_python()
    except LmEvalPeerError as exc:
        raise LmEvalPeerError(
            f"lm-eval task {task_name!r} checks answers with SymPy's LaTeX parser (lm-eval's "
            f"`math` extra, ANTLR 4.11), which cannot run in assay's environment; its "
            f"process_results runs in lm-eval's peer environment: {exc}"
        ) from None


def process_results_in_peer(
    task_name: str,
    function: Callable[..., Any],
    items: Sequence[tuple[Any, list[Any]]],
    timeout_s: float = 3600.0,
) -> PeerScores:
    """``function(doc, answers)`` for each item, run by lm-eval in the peer environment."""
    python = require_peer(task_name)
    import lm_eval

    path = _module_path(function)
    root = Path(lm_eval.__file__).resolve().parent
    if path is None or not path.is_relative_to(root):
        raise LmEvalPeerError(
            f"lm-eval task {task_name!r}: its process_results is not a file of lm-eval "
            f"({path}); only lm-eval's own task functions run in the peer"
        )
    try:
        payload = json.dumps(
            {
                "lm_eval_version": importlib.metadata.version("lm_eval"),
                "module": str(path.relative_to(root)),
                "module_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "function": function.__name__,
                "packages": list(PEER_PACKAGES),
                "items": [[dict(doc), list(answers)] for doc, answers in items],
            }
        )
    except TypeError as exc:
        raise LmEvalPeerError(
            f"lm-eval task {task_name!r}: a document or answer is not JSON data ({exc})"
        ) from None
    done = subprocess.run(
        [str(python), "-c", _DRIVER],
        input=payload,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
    )
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise LmEvalPeerError(
            f"lm-eval task {task_name!r}: process_results failed in {python}: {tail}"
        )
    answer = json.loads(done.stdout)
    results = answer["results"]
    if len(results) != len(items):
        raise LmEvalPeerError(
            f"lm-eval task {task_name!r}: the peer returned {len(results)} results for "
            f"{len(items)} documents"
        )
    return PeerScores(results, answer["versions"])
