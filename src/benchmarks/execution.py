"""Running untrusted generated code, so that nothing it does escapes and nothing it fakes passes.

Each program runs in its own process and session, in a fresh scratch directory, under limits on CPU
time, memory, file size, open files and (where the limit can bite) processes, with a wall-clock
timeout after which its whole process tree is killed. On top of that, when available:

- bubblewrap (`bwrap`): a new mount, pid, network and IPC namespace; only the system directories and
  the interpreter are visible, read-only; /tmp is private; the scratch directory is the one writable
  place; the sandbox dies with its parent.
- when the harness runs as root: the program runs under a fresh unprivileged uid of its own (a number
  no account uses), so it owns no file on the machine, can signal no other process, its process cap
  counts only its own processes, and every process left with that uid is killed afterwards. Without
  bubblewrap, root also puts the program in a private network namespace (no network at all), and
  removes what that uid left in /tmp, /var/tmp and /dev/shm (the places any uid may write). Each is
  probed first; where a container forbids one, it is left out (with a warning) and not pretended.

Passing needs a positive proof, not an exit code: the runner reads a random nonce from stdin before
the program starts (it is in no file the program can read) and writes it to a private file only after
the checks returned. `sys.exit(0)` or `os._exit(0)` before or inside the checks, a redefined `check`,
patched builtins: all end without the nonce and score as failed. This guards against generated code
that stops early or tampers with the checker; a program written to attack this harness in particular
(walking the interpreter's frames for the nonce, returning an object equal to everything) is not
defended against, as in the reference harness.

IMITATION_GAP_SANDBOX=subprocess forces the fallback (no bubblewrap), =bwrap requires bubblewrap;
metrics.json records which isolation ran (`isolation()`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

log = logging.getLogger(__name__)
MEMORY_BYTES = 1 << 30  # 1 GiB of address space per process
OUTPUT_BYTES = 1 << 20  # 1 MiB per file written (stderr included)
MAX_PROCESSES = 64  # processes and threads of the program's own uid (only enforced for a non-root uid)
MAX_OPEN_FILES = 64
STDERR_TAIL = 4000  # bytes of stderr kept for the failure detail
UID_BASE = 1_900_000_000  # fresh per-program uids are drawn above this (far above any account)
UID_SPAN = 100_000_000
CLONE_NEWNET = 0x40000000

# The runner: `python -I -c RUNNER <proof fd>` in the scratch directory holding solution.py (and, for
# a benchmark, test.py + entry_point.txt). The solution and the tests are compiled separately, so a
# completion cannot swallow the tests into a string; builtins are restored before the tests run.
RUNNER = r"""
import builtins, os, sys
nonce = sys.stdin.readline().strip().encode()
sys.stdin.close()
write, exit_now, getpid, proof_fd = os.write, os._exit, os.getpid, int(sys.argv[1])
runner_pid = getpid()
builtin_names = vars(builtins)
saved_builtins = dict(builtin_names)
namespace = {"__name__": "__main__", "__builtins__": builtins}

def run(name):
    with open(name, encoding="utf-8") as handle:
        exec(compile(handle.read(), name, "exec"), namespace)

run("solution.py")
if os.path.exists("test.py"):
    with open("entry_point.txt", encoding="utf-8") as handle:
        entry_point = handle.read().strip()
    builtin_names.clear()
    builtin_names.update(saved_builtins)
    namespace["__builtins__"] = builtins
    candidate = namespace[entry_point]
    run("test.py")
    namespace["check"](candidate)
if getpid() == runner_pid:  # a forked child that got here too must not add a second proof
    write(proof_fd, nonce)
exit_now(0)
"""


@dataclass
class ExecResult:
    status: str  # passed | failed | timed out
    detail: str = ""


@dataclass(frozen=True)
class Sandbox:
    bwrap: bool
    fresh_uid: bool  # root only: each program under its own unprivileged uid
    interpreter: str  # a Python the program's uid can execute
    prefix: str  # that interpreter's installation, made visible (read-only) under bubblewrap
    netns: bool = False  # without bubblewrap: a private network namespace (root, where unshare works)

    def describe(self) -> str:
        parts = ["bwrap" if self.bwrap else "subprocess", "rlimits"]
        if self.fresh_uid:
            parts.append("fresh-uid")
        if self.netns and not self.bwrap:
            parts.append("netns")
        return "+".join(parts)


def isolation() -> str:
    return sandbox().describe()


@cache
def _sandbox(mode: str) -> Sandbox:
    if mode not in {"auto", "bwrap", "subprocess"}:
        raise ValueError(f"IMITATION_GAP_SANDBOX={mode!r}: use auto, bwrap or subprocess")
    # root in a container may lack the capabilities for either: each is probed, and what fails is left out
    found = _find_interpreter() if os.geteuid() == 0 else None
    fresh_uid = found is not None
    interpreter, prefix = found or (os.path.realpath(sys.executable), sys.base_prefix)
    netns = os.geteuid() == 0 and _probe(_unshare_network)
    use_bwrap = False
    if mode != "subprocess" and shutil.which("bwrap"):
        probe = Sandbox(True, fresh_uid, interpreter, prefix)
        use_bwrap = run_program("pass\n", 30, probe).status == "passed"
    if mode == "bwrap" and not use_bwrap:
        raise RuntimeError("IMITATION_GAP_SANDBOX=bwrap, but bubblewrap is not installed or cannot start here")
    box = Sandbox(use_bwrap, fresh_uid, interpreter, prefix, netns)
    if os.geteuid() == 0 and not (fresh_uid and (use_bwrap or netns)):
        log.warning("sandbox: running as root with only %s: generated code is less contained", box.describe())
    return box


def sandbox() -> Sandbox:
    return _sandbox(os.environ.get("IMITATION_GAP_SANDBOX", "auto"))


def _probe(preexec) -> bool:
    try:
        return subprocess.run(["/bin/true"], preexec_fn=preexec, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _unshare_network() -> None:
    if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")


def _find_interpreter() -> tuple[str, str] | None:
    """(As root) the first Python a fresh unprivileged uid can execute, or None where that uid cannot
    be taken (a container's user namespace). A virtualenv under /root is out of its reach, the system's
    /usr/bin/python3 usually is not. Programs get the standard library only, as HumanEval needs; not
    as root, the installation itself runs them (not a virtualenv's link to it: bubblewrap shows only
    the installation)."""
    candidates = [sys.executable, os.path.realpath(sys.executable), getattr(sys, "_base_executable", ""),
                  shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or ""]
    for candidate in dict.fromkeys(c for c in candidates if c):
        try:
            probe = subprocess.run([candidate, "-I", "-c", "import sys, json, math, re; print(sys.base_prefix)"],
                                   capture_output=True, text=True, timeout=30, preexec_fn=_drop_to(_fresh_uid()))
        except (OSError, subprocess.SubprocessError):
            continue
        if probe.returncode == 0:
            return candidate, probe.stdout.strip()
    return None


def _fresh_uid() -> int:
    return UID_BASE + secrets.randbelow(UID_SPAN)


def _drop_to(uid: int):
    def apply() -> None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)

    return apply


def _bwrap_prefix(box: Sandbox, scratch: str) -> list[str]:
    command = ["bwrap"]
    for path in ("/usr", "/bin", "/lib", "/lib64", "/lib32", "/sbin", "/etc", box.prefix):
        if os.path.islink(path):
            command += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path) and not any(path.startswith(p + "/") for p in ("/usr", "/etc")):
            command += ["--ro-bind", path, path]
    return command + ["--tmpfs", "/tmp", "--bind", scratch, scratch, "--dev", "/dev", "--proc", "/proc",
                      "--unshare-all", "--die-with-parent", "--new-session", "--chdir", scratch]


def _limits(box: Sandbox, cpu_seconds: int, uid: int | None):
    def apply() -> None:
        os.setsid()  # own session and process group: the whole tree is killed on timeout
        if box.netns and not box.bwrap:
            _unshare_network()  # no network without bubblewrap: a private namespace has only a downed loopback
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
        resource.setrlimit(resource.RLIMIT_FSIZE, (OUTPUT_BYTES, OUTPUT_BYTES))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NOFILE, (MAX_OPEN_FILES, MAX_OPEN_FILES))
        if uid is not None:
            # a fresh uid owns no other process, so this caps the program alone (fork bombs included);
            # for an ordinary user the count would include everything else they run, so it is not set
            resource.setrlimit(resource.RLIMIT_NPROC, (MAX_PROCESSES, MAX_PROCESSES))
            _drop_to(uid)()

    return apply


def run_program(program: str, timeout_s: float, box: Sandbox | None = None) -> ExecResult:
    """Run a whole program; it passes when it runs to its end (and no earlier exit claims success)."""
    return _run({"solution.py": program}, timeout_s, box)


def run_tests(solution: str, test: str, entry_point: str, timeout_s: float) -> ExecResult:
    """Run a solution, then its tests (`def check(candidate)`) on `entry_point`: a HumanEval sample."""
    return _run({"solution.py": solution, "test.py": test, "entry_point.txt": entry_point}, timeout_s)


def _run(files: dict[str, str], timeout_s: float, box: Sandbox | None = None) -> ExecResult:
    box = box or sandbox()
    uid = _fresh_uid() if box.fresh_uid else None
    # the proof and stderr live outside the scratch directory, where the program cannot reach them
    with tempfile.TemporaryDirectory(prefix="imitation-gap-exec-") as scratch, \
            tempfile.TemporaryDirectory(prefix="imitation-gap-harness-") as private, \
            open(Path(private, "proof"), "w+b") as proof, open(Path(private, "stderr"), "w+b") as stderr:
        for name, text in files.items():
            Path(scratch, name).write_text(text, encoding="utf-8")
        if uid is not None:
            os.chown(scratch, uid, uid)
        nonce = secrets.token_hex(16)
        # the child inherits the proof file under the same descriptor number (pass_fds keeps numbers)
        command = [box.interpreter, "-I", "-B", "-c", RUNNER, str(proof.fileno())]
        if box.bwrap:
            command = _bwrap_prefix(box, scratch) + command
        env = {"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0", "HOME": scratch, "TMPDIR": scratch,
               "LANG": "C.UTF-8"}
        proc = subprocess.Popen(command, cwd=scratch, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=stderr, pass_fds=(proof.fileno(),),
                                preexec_fn=_limits(box, int(timeout_s) + 1, uid))
        try:
            proc.communicate((nonce + "\n").encode(), timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return ExecResult("timed out")
        finally:
            _kill_group(proc)  # nothing the program started outlives it
            if uid is not None:
                _kill_uid(uid)
                if not box.bwrap:  # (bubblewrap's /tmp is private and gone already)
                    _remove_leftovers(uid)
        proof.seek(0)
        if proof.read() == nonce.encode():
            return ExecResult("passed")
        return ExecResult("failed", _failure_detail(stderr, proc.returncode))


def _failure_detail(stderr, returncode: int) -> str:
    """The last line of stderr (the exception), or why the run ended without proof."""
    stderr.seek(max(0, os.fstat(stderr.fileno()).st_size - STDERR_TAIL))
    lines = stderr.read().decode("utf-8", "replace").strip().splitlines()
    if lines:
        return lines[-1][:300]
    if returncode < 0:
        return f"killed by signal {signal.Signals(-returncode).name}" if -returncode in signal.valid_signals() \
            else f"killed by signal {-returncode}"
    return f"exited with code {returncode} before the checks finished"


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


SHARED_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm")  # where any uid may write, without bubblewrap


def _remove_leftovers(uid: int) -> None:
    """Delete what the program's uid left in the world-writable directories: only it owns those."""
    for directory in SHARED_WRITABLE:
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except OSError:
                pass


def _kill_uid(uid: int) -> None:
    """Kill every process left with the program's uid (a child that started its own session escapes
    the process group, not its uid): kill(-1) from that uid reaches exactly those."""
    for _ in range(20):
        if not _processes_of(uid):
            return
        subprocess.run(["/bin/true"], preexec_fn=_kill_all_as(uid), check=False)
        time.sleep(0.05)
    log.warning("processes of sandbox uid %d survived 20 kill rounds: %s", uid, _processes_of(uid))


def _kill_all_as(uid: int):
    def apply() -> None:
        _drop_to(uid)()
        os.kill(-1, signal.SIGKILL)  # every process this uid may signal, except the caller

    return apply


def _processes_of(uid: int) -> list[int]:
    """Live pids whose real uid is `uid` (from /proc/<pid>/status: the directory's owner is root for
    a process that changed its uid without exec)."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                status = Path(entry.path, "status").read_text()
            except OSError:  # exited meanwhile
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            # a zombie holds nothing but its pid, and only its parent (or init) can reap it
            if fields.get("Uid", "").split()[:1] == [str(uid)] and not fields.get("State", "").strip().startswith("Z"):
                pids.append(int(entry.name))
    return pids
