"""Starting the training worker (src/training/worker.py) under torchrun, from the pipeline's process:
used when a cell needs several processes (train.nproc > 1), several nodes (train.nnodes > 1) or
DeepSpeed (train.deepspeed).

One node: `torchrun --standalone`. Several: one torchrun agent per node, meeting at a c10d
rendezvous hosted by the first node (rendezvous id: the cell's run_id). Inside a Slurm job the agents
are started by `srun --nodes=N --ntasks-per-node=1` (the job asks for the nodes:
`hydra.launcher.nodes=N`); outside one they all start on this host, which is how the rendezvous and
a multi-node world are tested on one machine.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

from src import PROJECT_ROOT
from src.cell import Cell

log = logging.getLogger(__name__)
RDZV_PORT = 29400  # torchrun's default c10d port, on the first node of a Slurm job


def write_resolved(cell: Cell, resolved: dict) -> Path:
    """The cell's resolved config as the worker reads it (Hydra's own keys dropped)."""
    from omegaconf import OmegaConf

    cell.dir.mkdir(parents=True, exist_ok=True)
    raw = {k: v for k, v in resolved.items() if k not in ("hydra", "hydra_overrides")}
    OmegaConf.save(OmegaConf.create(raw), cell.resolved_path)
    return cell.resolved_path


def agent_command(cell: Cell, path: Path, endpoint: str | None) -> list[str]:
    """One torchrun agent: standalone for one node, else a member of the c10d rendezvous at `endpoint`."""
    train = cell.cfg.train
    if train.nnodes == 1:
        where = ["--standalone"]
    else:
        where = [f"--nnodes={train.nnodes}", "--rdzv_backend=c10d", f"--rdzv_endpoint={endpoint}",
                 f"--rdzv_id={cell.run_id}"]
    return [sys.executable, "-m", "torch.distributed.run", *where, f"--nproc_per_node={train.nproc}",
            "-m", "src.training.worker", str(path)]


def launch_worker(cell: Cell, resolved: dict) -> None:
    path = write_resolved(cell, resolved)
    train = cell.cfg.train
    local_processes = train.nproc * (1 if "SLURM_JOB_ID" in os.environ else train.nnodes)
    threads = os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // local_processes)))
    env = {**os.environ, "OMP_NUM_THREADS": threads}
    if train.nnodes == 1:
        commands = [agent_command(cell, path, None)]
    elif "SLURM_JOB_ID" in os.environ:
        endpoint = f"{_first_slurm_node()}:{RDZV_PORT}"
        # --overlap: the job's own tasks (one per node, src/main.py lets all but the first return) hold the nodes
        commands = [["srun", "--overlap", f"--nodes={train.nnodes}", f"--ntasks={train.nnodes}", "--ntasks-per-node=1",
                     *agent_command(cell, path, endpoint)]]
    else:  # every "node" on this host: the rendezvous and the world as on a cluster
        endpoint = f"127.0.0.1:{_free_port()}"
        commands = [agent_command(cell, path, endpoint)] * train.nnodes
    for command in commands[:1]:
        log.info("launching %s%s", " ".join(command), f" (x{len(commands)} agents)" if len(commands) > 1 else "")
    procs = [subprocess.Popen(command, cwd=PROJECT_ROOT, env=env) for command in commands]
    codes = [proc.wait() for proc in procs]
    if any(codes):
        raise RuntimeError(f"the training worker failed (exit {max(codes, key=abs)}): {' '.join(commands[0])}")


def _first_slurm_node() -> str:
    nodes = subprocess.run(["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]],
                           capture_output=True, text=True, check=True).stdout.split()
    return nodes[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
