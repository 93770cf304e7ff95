"""A one-node Slurm cluster on this machine, for tests and for people (`make slurm-up` / `slurm-down`).

Everything lives under one folder (default .slurm/): the munge key and socket, slurm.conf, state,
spool, logs and pid files. Daemons are started with their own config and ports and stopped by the
pids they wrote, so nothing this did not start is ever touched. Clients find the cluster through
SLURM_CONF (see `env()`).

    python -m tests.helpers.slurm_cluster up [--root .slurm]     # prints the export line for SLURM_CONF
    python -m tests.helpers.slurm_cluster down [--root .slurm]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]


class SlurmError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install_packages() -> None:
    """Debian's packages, when missing (root only: a fixture on a fresh machine or CI)."""
    if all(shutil.which(b) for b in ("slurmctld", "slurmd", "munged", "sbatch")):
        return
    if os.geteuid() != 0:
        raise SlurmError(f"Slurm is not installed and this is not root: apt-get install {' '.join(PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", *PACKAGES], check=True, env=env, capture_output=True)


class LocalSlurm:
    def __init__(self, root: Path, partition: str = "debug"):
        self.root = Path(root).resolve()
        self.partition = partition
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket.2"

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    # --- setup ----------------------------------------------------------------------------------
    def _write_munge_key(self) -> Path:
        munge_dir = self.root / "munge"
        munge_dir.mkdir(parents=True, exist_ok=True)
        key = munge_dir / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        return key

    def _write_conf(self) -> None:
        cpus = os.cpu_count() or 1
        memory_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.9)
        for sub in ("state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(f"""# Written by tests/helpers/slurm_cluster.py: a one-node cluster for tests.
ClusterName=imitation-gap-test
SlurmctldHost={self.host}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
StateSaveLocation={self.root / 'state'}
SlurmdSpoolDir={self.root / 'spool'}
SlurmctldPidFile={self.root / 'slurmctld.pid'}
SlurmdPidFile={self.root / 'slurmd.pid'}
SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}
SlurmdLogFile={self.root / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
KillWait=5
InactiveLimit=0
MinJobAge=300
NodeName={self.host} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={self.partition} Nodes={self.host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
""")

    # --- start / stop ---------------------------------------------------------------------------
    def start(self, timeout_s: float = 60) -> LocalSlurm:
        install_packages()
        self.stop()  # leftovers of an earlier run in this folder (by its own pid files only)
        self.root.mkdir(parents=True, exist_ok=True)
        key = self._write_munge_key()
        self._write_conf()
        subprocess.run(["munged", "--force", f"--key-file={key}", f"--socket={self.munge_socket}",
                        f"--pid-file={self.root / 'munged.pid'}", f"--log-file={self.root / 'log' / 'munged.log'}",
                        f"--seed-file={self.root / 'munge' / 'munged.seed'}"], check=True, capture_output=True)
        subprocess.run(["slurmctld", "-f", str(self.conf)], check=True, capture_output=True, env=self.env())
        subprocess.run(["slurmd", "-f", str(self.conf), "-N", self.host], check=True, capture_output=True,
                       env=self.env())
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            state = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, env=self.env())
            if state.returncode == 0 and state.stdout.strip() in {"idle", "mixed", "allocated"}:
                return self
            time.sleep(0.5)
        self.stop()
        raise SlurmError(f"the node did not come up within {timeout_s:.0f} s; see {self.root / 'log'}")

    def stop(self) -> None:
        for name in ("slurmd", "slurmctld", "munged"):
            pid_file = self.root / f"{name}.pid"
            if not pid_file.exists():
                continue
            try:
                pid = int(pid_file.read_text().strip())
                os.kill(pid, signal.SIGTERM)
                for _ in range(50):  # up to 5 s for a clean exit
                    os.kill(pid, 0)
                    time.sleep(0.1)
                os.kill(pid, signal.SIGKILL)
            except (ValueError, ProcessLookupError, PermissionError):
                pass
            pid_file.unlink(missing_ok=True)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), capture_output=True, text=True, env=self.env(), check=check)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--root", type=Path, default=Path(".slurm"))
    args = parser.parse_args()
    cluster = LocalSlurm(args.root)
    if args.action == "up":
        cluster.start()
        print(cluster.run("sinfo").stdout)
        print(f"export SLURM_CONF={cluster.conf}")
    else:
        cluster.stop()
        print(f"stopped the daemons started under {cluster.root}")


if __name__ == "__main__":
    main()
