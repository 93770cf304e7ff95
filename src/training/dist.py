"""This process's place among a cell's training processes, and the collectives the loop needs."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Dist:
    """This process's place among the training processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> Dist:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return cls(torch.distributed.get_rank(), torch.distributed.get_world_size())
        return cls()

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def sum(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return t.item()

    def broadcast_weights(self, model: torch.nn.Module) -> None:
        """Every process starts from rank 0's weights."""
        if self.world > 1:
            for p in model.parameters():
                torch.distributed.broadcast(p.data, src=0)


def all_reduce_grads(params: list[torch.nn.Parameter]) -> None:
    """Sum gradients over processes in one flat buffer (a process with no rows contributes zeros)."""
    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    flat = torch._utils._flatten_dense_tensors(grads)
    torch.distributed.all_reduce(flat)
    for grad, reduced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads), strict=True):
        grad.copy_(reduced)
