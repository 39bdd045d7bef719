"""Run untrusted Python (code a model wrote) in a sandbox, never in the evaluator's process.

Each program runs in a process of its own under bubblewrap (``bwrap``, Debian's
``bubblewrap`` package), with:

- **no network**: a network namespace of its own, holding only a loopback of its own;
- **nothing writable but a private temporary directory**: a fresh tmpfs at ``/tmp`` (its
  working directory, capped in size), ``/usr`` read-only, the root and ``/dev`` read-only;
  no ``/etc``, no home, no host temporary files. The program is copied into the tmpfs, so
  nothing of the evaluator's disk is shared writable and nothing is left behind;
- **no inherited environment**: bubblewrap starts with an empty environment (``--clearenv``
  too), so no API key reaches the program, not even through ``/proc/1/environ``;
- **no view of other processes**: pid, IPC, UTS and user namespaces of its own, an
  unprivileged uid (``nobody``; when the evaluator is root, bubblewrap itself is started as
  ``nobody``: the kernel does not count processes of root against ``RLIMIT_NPROC``), no
  capabilities, no further user namespaces, a new session (no terminal to inject into);
- **limits**: CPU seconds, address space, processes (and threads), open files and file size,
  set inside the sandbox before the program runs (``RLIMIT_NPROC`` must be set once the
  user namespace exists, so that it counts this sandbox's processes only; setting limits
  there also keeps ``preexec_fn`` out of the evaluator, which is unsafe with threads);
- **a wall-clock timeout** from the program's start, and a cap on what it prints (stdout and
  stderr each): past either, bubblewrap's whole process group is killed, and with it the pid
  namespace (``--die-with-parent``), whatever the program forked.

A pass needs the source to have run to its end: the bootstrap prints a random token only
after the source returns, so a program that ends the process early (``sys.exit(0)``,
``os._exit(0)``) does not pass. (A program that hunts the bootstrap's memory for the token
could fake it: the sandbox contains hostile programs, it does not make a score
adversarially robust.)

Without bubblewrap, or where it cannot create its namespaces, :meth:`Sandbox.check` raises
:class:`SandboxUnavailable` with the reason; nothing here ever runs a program another way.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

DEFAULT_PYTHON = "/usr/bin/python3"
SANDBOX_UID = 65534  # nobody
SANDBOX_HOME = "/tmp"
PROGRAM_FILE = "main.py"
_READ_CHUNK = 65536


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot run here (no bubblewrap, no namespaces, no interpreter); the
    message says why. Code that needs it refuses to run: there is no unsandboxed fallback."""


class SandboxError(RuntimeError):
    """The sandbox failed to start a program: a problem of the host, not of the program."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one program may use. ``cpu_s`` defaults to the timeout rounded up, plus one."""

    timeout_s: float = 3.0  # wall clock, from the program's start
    memory_mb: int = 512  # address space of each process
    processes: int = 32  # processes and threads in the sandbox, the interpreter included
    open_files: int = 64
    file_mb: int = 16  # the largest file it may write, and the size of its tmpfs
    output_bytes: int = 64 * 1024  # stdout and stderr each; past it the program is killed
    cpu_s: int | None = None  # CPU seconds of each process
    startup_s: float = 10.0  # for the sandbox itself to start; not the program's time

    def __post_init__(self) -> None:
        for name in ("timeout_s", "memory_mb", "processes", "open_files", "file_mb"):
            if not getattr(self, name) > 0:
                raise ValueError(f"sandbox limit {name} must be > 0, got {getattr(self, name)}")
        if self.output_bytes < 1 or self.startup_s <= 0:
            raise ValueError("sandbox limits output_bytes and startup_s must be > 0")
        if self.cpu_s is not None and self.cpu_s < 1:
            raise ValueError(f"sandbox limit cpu_s must be >= 1, got {self.cpu_s}")

    @property
    def cpu_seconds(self) -> int:
        return self.cpu_s if self.cpu_s is not None else math.ceil(self.timeout_s) + 1

    def rlimits(self) -> list[tuple[str, int, int]]:
        """(``resource`` constant name, soft, hard) set inside the sandbox."""
        mib = 1024 * 1024
        return [
            ("RLIMIT_CPU", self.cpu_seconds, self.cpu_seconds + 1),  # soft: SIGXCPU
            ("RLIMIT_AS", self.memory_mb * mib, self.memory_mb * mib),
            ("RLIMIT_NPROC", self.processes, self.processes),
            ("RLIMIT_NOFILE", self.open_files, self.open_files),
            ("RLIMIT_FSIZE", self.file_mb * mib, self.file_mb * mib),
            ("RLIMIT_CORE", 0, 0),
        ]


# Runs first inside the sandbox (``python -I -S -c``): reads the token from stdin, closes
# every inherited descriptor but 0-2, sets the limits, says it started, runs the program
# and, only if the program returned, prints the token again.
_BOOTSTRAP = """\
def _bootstrap(limits):
    import os, resource, sys
    token = sys.stdin.buffer.readline().strip().decode()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    for name, soft, hard in limits:
        resource.setrlimit(getattr(resource, name), (soft, hard))
    sys.stdout.write(token + ":start\\n")
    sys.stdout.flush()
    with open({program!r}, "rb") as handle:
        source = handle.read()
    code = compile(source, {program!r}, "exec")
    del source, handle
    sys.argv = [{program!r}]
    exec(code, {{"__name__": "__main__", "__file__": {program!r}, "__builtins__": __builtins__}})
    sys.stdout.flush()
    sys.stderr.flush()
    sys.stdout.write("\\n" + token + ":done\\n")
    sys.stdout.flush()


_bootstrap({limits!r})
"""


@dataclass(frozen=True, slots=True)
class RunResult:
    """What one sandboxed run did.

    ``status``: ``"exited"`` (the process ended by itself), ``"timeout"`` (killed at the
    wall-clock limit) or ``"output_limit"`` (killed for printing too much). ``finished``: the
    source ran to its end. ``returncode`` is bubblewrap's (the program's exit status, or 128
    plus the signal that ended it); None when the run was killed.
    """

    status: str
    returncode: int | None
    finished: bool
    stdout: str
    stderr: str
    duration_s: float  # from the program's start

    @property
    def signal(self) -> int | None:
        """The signal that ended the program, when its status says one did."""
        if self.returncode is not None and self.returncode > 128:
            return self.returncode - 128
        return None


@dataclass(frozen=True)
class Sandbox:
    """bubblewrap around a Python interpreter under ``/usr`` (stdlib only: ``-I -S``)."""

    python: str = DEFAULT_PYTHON
    limits: Limits = field(default_factory=Limits)
    bwrap: str | None = None  # default: ``bwrap`` on PATH

    def _bwrap(self) -> str | None:
        if self.bwrap is not None:
            return self.bwrap if os.access(self.bwrap, os.X_OK) else None
        return shutil.which("bwrap")

    def check(self) -> None:
        """Raise :class:`SandboxUnavailable`, with the reason, unless programs can run here."""
        reason = _probe(self._bwrap(), self.python)
        if reason is not None:
            raise SandboxUnavailable(reason)

    def command(self, program_fd: int = 3) -> list[str]:
        """The bubblewrap command line that runs the program copied from ``program_fd``."""
        bwrap = self._bwrap()
        if bwrap is None:
            raise SandboxUnavailable(_NO_BWRAP)
        limits = self.limits
        cmd = [
            bwrap,
            "--unshare-all",  # network, pid, IPC, UTS, cgroup (and user) namespaces
            "--unshare-user",
            "--disable-userns",
            "--uid", str(SANDBOX_UID),
            "--gid", str(SANDBOX_UID),
            "--die-with-parent",
            "--new-session",
            "--clearenv",
            "--setenv", "PATH", "/usr/bin:/bin",
            "--setenv", "HOME", SANDBOX_HOME,
            "--ro-bind", "/usr", "/usr",
        ]  # fmt: skip
        cmd += _top_level_links()
        cmd += [
            "--proc", "/proc",
            "--dev", "/dev",
            "--size", str(limits.file_mb * 1024 * 1024),
            "--tmpfs", "/tmp",
            "--file", str(program_fd), f"/tmp/{PROGRAM_FILE}",
            "--remount-ro", "/dev",
            "--remount-ro", "/",
            "--chdir", "/tmp",
            "--",
            self.python, "-I", "-S", "-c",
            _BOOTSTRAP.format(program=PROGRAM_FILE, limits=limits.rlimits()),
        ]  # fmt: skip
        return cmd

    def run(self, source: str) -> RunResult:
        """Run ``source`` as a Python program in the sandbox; never raises for what the
        program does. Raises :class:`SandboxUnavailable` or :class:`SandboxError` when the
        sandbox itself cannot run it."""
        self.check()
        return _run(self, source)


def _top_level_links() -> list[str]:
    """Merged-/usr systems have /bin, /lib, … as links into /usr: the same links inside; a
    system with real folders gets them read-only."""
    out: list[str] = []
    for name in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        path = Path(name)
        if path.is_symlink():
            out += ["--symlink", os.readlink(path), name]
        elif path.is_dir():
            out += ["--ro-bind", name, name]
    return out


_NO_BWRAP = (
    "bubblewrap (bwrap) is not installed: install it (Debian: apt-get install bubblewrap) "
    "to run model-written code; it is never run outside the sandbox"
)


@cache
def _probe(bwrap: str | None, python: str) -> str | None:
    """Why the sandbox cannot run programs here, or None when a trivial one runs in it."""
    if bwrap is None:
        return _NO_BWRAP
    if not python.startswith("/usr/"):
        return f"the sandbox shows only /usr, and the interpreter {python!r} is outside it"
    if not os.access(python, os.X_OK):
        return f"no Python interpreter at {python} for the sandbox"
    try:
        result = _run(Sandbox(python, Limits(timeout_s=10.0), bwrap), "print('ok')")
    except SandboxError as exc:
        return f"bubblewrap cannot run programs here: {exc}"
    if not (result.finished and result.stdout == "ok\n"):
        return f"a trivial program failed in the sandbox ({result.status}): {result.stderr[-500:]}"
    return None


def _run(sandbox: Sandbox, source: str) -> RunResult:
    limits = sandbox.limits
    token = secrets.token_hex(16)
    start_line = f"{token}:start\n".encode()
    done_line = f"\n{token}:done\n".encode()
    program_fd = os.memfd_create("program", 0)
    try:
        os.write(program_fd, source.encode("utf-8", "surrogatepass"))
        os.lseek(program_fd, 0, os.SEEK_SET)
        as_nobody: dict[str, object] = {}
        if os.geteuid() == 0:
            as_nobody = {"user": SANDBOX_UID, "group": SANDBOX_UID, "extra_groups": []}
        proc = subprocess.Popen(
            sandbox.command(program_fd),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(program_fd,),
            env={},  # bubblewrap's own environment is readable inside through /proc/1/environ
            start_new_session=True,  # its own process group, killed whole
            **as_nobody,  # type: ignore[arg-type]
        )
    finally:
        os.close(program_fd)
    try:
        return _supervise(proc, token, start_line, done_line, limits)
    finally:
        if proc.poll() is None:
            _kill(proc)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill bubblewrap's process group; the pid namespace dies with it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _supervise(
    proc: subprocess.Popen[bytes],
    token: str,
    start_line: bytes,
    done_line: bytes,
    limits: Limits,
) -> RunResult:
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        proc.stdin.write(token.encode() + b"\n")
        proc.stdin.close()
    except BrokenPipeError:
        pass  # bubblewrap died at once; its stderr says why
    buffers = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    stdout = buffers[proc.stdout.fileno()]
    cap = {proc.stdout.fileno(): limits.output_bytes + len(start_line) + len(done_line)}
    cap[proc.stderr.fileno()] = limits.output_bytes
    begun = time.monotonic()
    started: float | None = None
    status = "exited"
    with selectors.DefaultSelector() as selector:
        for fd in buffers:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            if started is None and stdout.startswith(start_line):
                started = time.monotonic()
            deadline = (begun + limits.startup_s) if started is None else started + limits.timeout_s
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                status = "timeout"
                break
            for key, _ in selector.select(remaining):
                data = os.read(key.fd, _READ_CHUNK)
                if not data:
                    selector.unregister(key.fd)
                    continue
                buffers[key.fd] += data
                if len(buffers[key.fd]) > cap[key.fd]:
                    status = "output_limit"
            if status != "exited":
                break
    if started is None and stdout.startswith(start_line):
        started = time.monotonic()
    if status == "exited":
        deadline = (started or begun) + (limits.timeout_s if started else limits.startup_s)
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            status = "timeout"
    if status != "exited":
        _kill(proc)
    ended = time.monotonic()
    err = bytes(buffers[proc.stderr.fileno()])
    if started is None:
        why = "did not start within the startup limit" if status == "timeout" else "failed"
        detail = err.decode("utf-8", "replace").strip()[-500:] or f"exit status {proc.returncode}"
        raise SandboxError(f"the sandboxed program {why}: {detail}")
    out = bytes(stdout[len(start_line) :])
    finished = status == "exited" and out.endswith(done_line)
    if finished:
        out = out[: -len(done_line)]
    return RunResult(
        status=status,
        returncode=proc.returncode if status == "exited" else None,
        finished=finished,
        stdout=out[: limits.output_bytes].decode("utf-8", "replace"),
        stderr=err[: limits.output_bytes].decode("utf-8", "replace"),
        duration_s=ended - started,
    )
