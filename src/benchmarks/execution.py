"""Running untrusted generated code: a subprocess per program, in a scratch directory, with CPU-time,
memory, file-size and process limits and a wall-clock timeout. Where bubblewrap (`bwrap`) is
installed, the process also gets a read-only root, no network and private /tmp; metrics.json records
which isolation ran."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass

MEMORY_BYTES = 1 << 30  # 1 GiB of address space
OUTPUT_BYTES = 1 << 20  # 1 MiB of files


@dataclass
class ExecResult:
    status: str  # passed | failed | timed out
    detail: str = ""


def _limits(cpu_seconds: int):
    def apply() -> None:
        os.setsid()  # own process group: the whole tree is killed on timeout
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
        resource.setrlimit(resource.RLIMIT_FSIZE, (OUTPUT_BYTES, OUTPUT_BYTES))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def isolation() -> str:
    return "bwrap+rlimits" if _bwrap_works() else "subprocess+rlimits"


_BWRAP: bool | None = None


def _bwrap_works() -> bool:
    global _BWRAP
    if _BWRAP is None:
        _BWRAP = False
        if shutil.which("bwrap"):
            probe = subprocess.run(_bwrap_prefix("/tmp") + ["true"], capture_output=True, timeout=10)
            _BWRAP = probe.returncode == 0
    return _BWRAP


def _bwrap_prefix(scratch: str) -> list[str]:
    return ["bwrap", "--ro-bind", "/", "/", "--tmpfs", "/tmp", "--bind", scratch, scratch, "--dev", "/dev",
            "--proc", "/proc", "--unshare-all", "--die-with-parent", "--chdir", scratch]


def run_program(program: str, timeout_s: float) -> ExecResult:
    with tempfile.TemporaryDirectory(prefix="imitation-gap-exec-") as scratch:
        path = os.path.join(scratch, "program.py")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(program)
        command = [sys.executable, "-I", "-B", path]
        if _bwrap_works():
            command = _bwrap_prefix(scratch) + command
        env = {"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0", "HOME": scratch, "TMPDIR": scratch}
        proc = subprocess.Popen(command, cwd=scratch, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                preexec_fn=_limits(int(timeout_s) + 1))
        try:
            _, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return ExecResult("timed out")
        finally:
            _kill_group(proc)  # nothing the program started outlives it
        if proc.returncode == 0:
            return ExecResult("passed")
        tail = stderr.decode("utf-8", "replace").strip().splitlines()
        return ExecResult("failed", tail[-1][:300] if tail else f"exit code {proc.returncode}")


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
