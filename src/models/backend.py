"""The model side of evaluation: what a benchmark may ask of a model (the Backend protocol), the
model a cell evaluates (ModelWeights), and the backends registered by name (`eval_backend`):
`hf` (src/models/hf.py, everywhere) and `vllm` (src/models/vllm.py, CUDA machines with vllm).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from src.config import ModelConfig
from src.data.template import ChatFormat
from src.models.load import load_checkpoint, load_model
from src.models.sources import model_source
from src.registry import Registry


class Backend(Protocol):
    tokenizer: object
    format: ChatFormat
    trained: bool  # imitation-trained (True) or the base model (False): benchmarks pick the prompt form by it
    n_parameters: int

    def chat_prompt(self, user_text: str) -> str: ...

    def encode(self, text: str, chat: bool = False) -> list[int]: ...

    def generate(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = (),
                 batch_size: int = 8, chat: bool = False, desc: str = "generate",
                 repetition_penalty: float = 1.0, finished: list[bool] | None = None,
                 temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
                 top_k: int = 0, lengths: list[int] | None = None) -> list[str]: ...

    def loglikelihood(self, requests: Sequence[tuple[str, str]], batch_size: int = 16, chat: bool = False,
                      shared_prefix: bool = True, desc: str = "loglikelihood") -> list[tuple[float, bool]]: ...

    def next_token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[int], batch_size: int = 16,
                            chat: bool = False, shared_prefix: bool = True,
                            desc: str = "next-token") -> list[list[float]]: ...


@dataclass
class ModelWeights:
    """The model a cell evaluates: the base model at its source, or a fine-tuned one on disk
    (`checkpoint`) and/or already in this process's memory (`module`, the run that just trained it)."""

    base: ModelConfig
    cache_dir: str
    trained: bool
    checkpoint: Path | None = None
    module: torch.nn.Module | None = None
    seed: int = 0  # a random-init base model's weights

    def location(self) -> str:
        """Where a backend that loads weights itself reads them."""
        if not self.trained:
            return model_source(self.base, self.cache_dir)
        if self.checkpoint is None:
            raise ValueError("the trained model was kept only in memory: set train.save_checkpoint=true")
        return str(self.checkpoint)

    def load(self, device: torch.device, tokenizer) -> torch.nn.Module:
        """The model in this process (the tokenizer sizes a random-init model's vocabulary)."""
        if self.module is None:
            self.module = (load_checkpoint(self.checkpoint, self.base.dtype, device) if self.trained
                           else load_model(self.base, tokenizer, self.cache_dir, device, seed=self.seed))
        return self.module

    def release(self) -> None:
        """Drop the in-memory copy (a backend that loads its own)."""
        self.module = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# (weights, tokenizer, chat format, device) -> a Backend
BACKENDS: Registry[Callable[[ModelWeights, object, ChatFormat, torch.device], Backend]] = Registry("eval_backend")


def open_backend(name: str, weights: ModelWeights, tokenizer, fmt: ChatFormat, device: torch.device) -> Backend:
    return BACKENDS.get(name, key="eval_backend")(weights, tokenizer, fmt, device)
