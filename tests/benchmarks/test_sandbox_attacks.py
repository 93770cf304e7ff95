"""The HumanEval sandbox against an attack corpus, in both isolation modes (bubblewrap, and the forced
subprocess fallback): every attack is contained, the canary directory and the secret stay intact, each
attack scores failed or timed out, the run goes on to score a correct sample, and the total time is
bounded by the timeouts.

The fallback contains these attacks only when the harness runs as root (each program then gets a fresh
unprivileged uid and a private network namespace); run as an ordinary user it is rlimits only and
the program could touch that user's files, so its tests are skipped there (install bubblewrap).
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import pytest

from src import PROJECT_ROOT
from src.benchmarks import execution
from src.benchmarks.humaneval import score_completions

TIMEOUT = 1.5
LEFTOVER = "imitation-gap-attack-leftover"
PROBLEM = {
    "task_id": "Toy/0",
    "prompt": "def add(a, b):\n",
    "entry_point": "add",
    "test": "def check(candidate):\n    assert abs(candidate(2, 3) - 5) < 1e-9\n    assert candidate(-1, 1) == 0\n",
}
CORRECT = "    return a + b\n"


def attacks(canary: Path, secret: Path, port: int, harness_pid: int) -> dict[str, str]:
    """name -> completion of `def add(a, b):`. Each is wrong (returns None or raises) unless its
    attack on the machine or on the checker worked."""
    return {
        "escaped_daemon_deletes_canary_later": (
            "    import os, shutil, time\n    if os.fork() == 0:\n        os.setsid()\n        if os.fork() == 0:\n"
            f"            time.sleep(1.0)\n            shutil.rmtree({str(canary)!r})\n        os._exit(0)\n"),
        "fork_bomb": "    import os\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass\n",
        "delete_canary": f"    import shutil\n    shutil.rmtree({str(canary)!r})\n",
        "write_into_canary": f"    open({str(canary / 'pwned.txt')!r}, 'w').write('x')\n",
        "write_into_project": f"    open({str(PROJECT_ROOT / 'escaped_by_sandbox.txt')!r}, 'w').write('x')\n",
        "read_secret": f"    raise RuntimeError(open({str(secret)!r}).read())\n",
        "read_environment": "    import os\n    raise RuntimeError(str(dict(os.environ)))\n",
        "read_harness_environment": f"    raise RuntimeError(open('/proc/{harness_pid}/environ').read())\n",
        "write_into_tmp": (f"    import os\n    os.makedirs('/tmp/{LEFTOVER}/deep', exist_ok=True)\n"
                           f"    open('/dev/shm/{LEFTOVER}', 'w').write('x')\n"),
        "network": f"    import socket\n    socket.create_connection(('127.0.0.1', {port}), 1).sendall(b'hi')\n",
        "infinite_loop": "    while True:\n        pass\n",
        "memory_bomb": "    x = bytearray(8 * 1024 ** 3)\n",
        "kill_parent": "    import os, signal\n    os.kill(os.getppid(), signal.SIGKILL)\n",
        "kill_harness": f"    import os, signal\n    os.kill({harness_pid}, signal.SIGKILL)\n",
        "kill_everything": "    import os, signal\n    os.kill(-1, signal.SIGKILL)\n",
        "sys_exit_0_at_import": "    pass\nimport sys\nsys.exit(0)\n",
        "os_exit_0_in_check": "    import os\n    os._exit(0)\n",
        "raise_system_exit_0": "    raise SystemExit(0)\n",
        "redefine_check": "    return None\n\ndef check(candidate):\n    pass\n",
        "patch_builtins": "    return None\n\nimport builtins\nbuiltins.abs = lambda x: 0\n",
        "replace_builtins_dict": ("    return None\n\nimport builtins\n"
                                  "__builtins__ = dict(vars(builtins), abs=lambda x: 0)\n"),
        "atexit_exit_0": "    return None\n\nimport atexit, os\natexit.register(lambda: os._exit(0))\n",
        "excepthook_exit_0": "    return None\n\nimport os, sys\nsys.excepthook = lambda *a: os._exit(0)\n",
        "forge_proof": ("    import os\n    for fd in range(3, 20):\n        try:\n            os.write(fd, b'0' * 32)\n"
                        "        except OSError:\n            pass\n    os._exit(0)\n"),
        "steal_nonce_from_stdin": "    import os\n    os.write(3, os.read(0, 64))\n    os._exit(0)\n",
        "huge_stdout": "    import sys\n    while True:\n        sys.stdout.write('x' * 1000000)\n",
        "huge_stderr": "    import sys\n    while True:\n        sys.stderr.write('x' * 1000000)\n",
        "thread_exits_0_before_check_fails": ("    import os, threading, time\n"
                                              "    threading.Timer(0.2, lambda: os._exit(0)).start()\n"
                                              "    time.sleep(1)\n"),
        "thread_outlives_test": ("    import threading\n"
                                 "    threading.Thread(target=lambda: [None for _ in iter(int, 1)]).start()\n"),
        "alarm_handler_exits_0": ("    import os, signal, time\n    signal.signal(signal.SIGALRM, lambda *a: os._exit(0))\n"
                                  "    signal.setitimer(signal.ITIMER_REAL, 0.1)\n    time.sleep(1)\n"),
        "ignore_sigterm_and_loop": "    import signal\n    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n    while True:\n        pass\n",
        "segfault": "    import ctypes\n    ctypes.string_at(0)\n",
    }


TIMING_OUT = {"fork_bomb", "infinite_loop", "huge_stdout", "thread_outlives_test", "ignore_sigterm_and_loop"}


@pytest.fixture(params=["bwrap", "subprocess"])
def mode(request, monkeypatch):
    if request.param == "bwrap" and not shutil.which("bwrap"):
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap)")
    box = execution._sandbox(request.param) if request.param == "subprocess" else None
    if box is not None and not (box.fresh_uid and box.netns):
        pytest.skip("the fallback isolates programs only as root, with a settable uid and network namespace")
    monkeypatch.setenv("IMITATION_GAP_SANDBOX", request.param)
    return request.param


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"", p.stat().st_mode)
            for p in sorted(root.rglob("*"))}


def live_sandbox_processes() -> list[int]:
    return [int(entry.name) for entry in os.scandir("/proc") if entry.name.isdigit() and _sandbox_uid(entry.path)]


def _sandbox_uid(proc: str) -> bool:
    try:
        fields = dict(line.split(":", 1) for line in Path(proc, "status").read_text().splitlines() if ":" in line)
    except OSError:
        return False
    uid = int(fields["Uid"].split()[0])
    return execution.UID_BASE <= uid < execution.UID_BASE + execution.UID_SPAN and "Z" not in fields["State"]


def test_every_attack_is_contained_and_scored_failed(mode, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "TOP-SECRET-ENV-KEY")  # the harness's environment holds a key
    canary = tmp_path / "canary"
    (canary / "sub").mkdir(parents=True)
    (canary / "a.txt").write_text("keep me")
    (canary / "sub" / "b.txt").write_text("me too")
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-TOKEN")
    secret.chmod(0o600)
    before = snapshot(canary)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    corpus = attacks(canary, secret, listener.getsockname()[1], os.getpid())
    assert len(corpus) >= 20
    samples = [{"task_id": "Toy/0", "completion": c, "attack": name} for name, c in corpus.items()]
    samples.append({"task_id": "Toy/0", "completion": CORRECT, "attack": "none"})

    start = time.monotonic()
    _, rows = score_completions({"Toy/0": PROBLEM}, samples, timeout_s=TIMEOUT, ks=[1])
    elapsed = time.monotonic() - start

    results = {r["attack"]: r["result"] for r in rows}
    assert results.pop("none") == "passed"  # the run went on and still scores a correct sample
    assert {name for name, result in results.items() if result == "timed out"} == TIMING_OUT
    assert {result for result in results.values()} == {"failed", "timed out"}
    assert all("TOP-SECRET" not in r["detail"] for r in rows)  # neither the file nor the environment
    # bounded: the timeouts plus well under a second of overhead per sample
    assert elapsed < len(TIMING_OUT) * TIMEOUT + 0.5 * len(samples)

    time.sleep(max(0.0, start + 1.5 - time.monotonic()))  # the escaped daemon's rmtree (first, 1 s late) is due
    assert snapshot(canary) == before
    assert secret.read_text() == "TOP-SECRET-TOKEN"
    assert not (PROJECT_ROOT / "escaped_by_sandbox.txt").exists()
    assert not Path("/tmp", LEFTOVER).exists() and not Path("/dev/shm", LEFTOVER).exists()
    with pytest.raises(BlockingIOError):  # nothing connected to the listener
        listener.accept()
    listener.close()
    assert live_sandbox_processes() == []
    assert execution.isolation().startswith("bwrap" if mode == "bwrap" else "subprocess")


def test_sys_exit_before_the_checks_is_failed_with_a_reason(mode):
    result = execution.run_tests("import sys\nsys.exit(0)\n" + PROBLEM["prompt"] + CORRECT, PROBLEM["test"],
                                 "add", TIMEOUT)
    assert result.status == "failed"
    assert result.detail == "exited with code 0 before the checks finished"
    assert execution.run_tests(PROBLEM["prompt"] + CORRECT, PROBLEM["test"], "add", TIMEOUT).status == "passed"


def test_requiring_bubblewrap_where_it_is_missing_is_an_error(monkeypatch):
    monkeypatch.setenv("IMITATION_GAP_SANDBOX", "bwrap")
    which = shutil.which
    monkeypatch.setattr(execution.shutil, "which", lambda name, path=None: None if name == "bwrap" else which(name, path=path))
    execution._sandbox.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="bubblewrap is not installed"):
            execution.isolation()
    finally:
        execution._sandbox.cache_clear()


def test_a_correct_solution_that_forks_and_starts_threads_passes(mode):
    """Only the runner's own process writes the proof: a child reaching the end adds nothing."""
    solution = ("import os, threading\n\ndef add(a, b):\n    if os.fork() == 0:\n        os._exit(0)\n"
                "    os.wait()\n    worker = threading.Thread(target=lambda: None)\n    worker.start()\n"
                "    worker.join()\n    return a + b\n\nif os.fork() == 0:\n    pass  # this child runs to the end too\n")
    assert execution.run_tests(solution, PROBLEM["test"], "add", TIMEOUT).status == "passed"
