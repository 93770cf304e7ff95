"""The vLLM backend: the Backend protocol over a vLLM engine, for GPU users with many cells to score.
Optional: `eval_backend=vllm` needs `pip install vllm` on a CUDA machine; the default `hf` backend
(src/models/hf.py) runs everywhere.

Prompts go to vLLM as token ids encoded exactly as ModelHandle encodes them (chat prompts rendered by
the chat format, BOS only where the format wants one), so both backends score the same tokens.
Log-likelihoods come from vLLM's prompt log-probs: the log-prob of each prompt token and its rank in
the vocabulary (rank 1 = what greedy decoding would pick).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from src.config import ConfigError
from src.data.template import ChatFormat
from src.models.backend import BACKENDS, ModelWeights
from src.models.load import count_parameters
from src.models.prompts import chat_prompt, cut_at_stop, encode_prompt, split_requests


class VLLMMissing(RuntimeError):
    pass


class VLLMHandle:
    def __init__(self, model_path: str | Path, tokenizer, fmt: ChatFormat, trained: bool, dtype: str = "bfloat16",
                 seed: int = 0, gpu_memory_utilization: float = 0.85):
        try:
            from vllm import LLM
        except ImportError as err:
            raise VLLMMissing("eval_backend=vllm needs the vllm package (pip install vllm, on a CUDA machine); "
                              "eval_backend=hf works everywhere") from err
        self.tokenizer = tokenizer
        self.format = fmt
        self.trained = trained
        self.device = "vllm"
        self.model_path = model_path
        # prefix caching: k-shot blocks and MMLU's answer letters share long prompt prefixes
        self.llm = LLM(model=str(model_path), tokenizer=str(model_path), dtype=dtype, seed=seed,
                       gpu_memory_utilization=gpu_memory_utilization, enable_prefix_caching=True)

    @property
    def n_parameters(self) -> int:
        """Of the weights the engine loaded, counted without a second copy (src/models/load.py)."""
        return count_parameters(self.model_path)

    # the same prompt rendering and encoding as ModelHandle
    def chat_prompt(self, user_text: str) -> str:
        return chat_prompt(self.format, user_text)

    def encode(self, text: str, chat: bool = False) -> list[int]:
        return encode_prompt(self.tokenizer, self.format, text, chat)

    def _sampling(self, **kwargs):
        from vllm import SamplingParams

        return SamplingParams(**kwargs)

    def generate(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = (),
                 batch_size: int = 8, chat: bool = False, desc: str = "generate",
                 repetition_penalty: float = 1.0, finished: list[bool] | None = None,
                 temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
                 top_k: int = 0, lengths: list[int] | None = None) -> list[str]:
        """As ModelHandle.generate; vLLM batches by itself (batch_size is ignored)."""
        params = self._sampling(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                top_k=top_k if top_k > 0 else -1,  # vLLM's "no top-k" is -1
                                stop=list(stop) or None, repetition_penalty=repetition_penalty, seed=seed)
        requests = [{"prompt_token_ids": self.encode(p, chat)} for p in prompts]
        outputs = self.llm.generate(requests, params, use_tqdm=True)
        texts = [cut_at_stop(out.outputs[0].text, stop) for out in outputs]
        if finished is not None:
            # "stop" = EOS or a stop string; "length" = ran out of max_new_tokens
            finished[:] = [out.outputs[0].finish_reason == "stop" for out in outputs]
        if lengths is not None:
            lengths[:] = [len(out.outputs[0].token_ids) for out in outputs]
        return texts

    def _prompt_logprobs(self, sequences: list[list[int]]) -> list[list]:
        params = self._sampling(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outputs = self.llm.generate([{"prompt_token_ids": seq} for seq in sequences], params, use_tqdm=True)
        return [out.prompt_logprobs for out in outputs]

    def loglikelihood(self, requests: Sequence[tuple[str, str]], batch_size: int = 16, chat: bool = False,
                      shared_prefix: bool = True, desc: str = "loglikelihood") -> list[tuple[float, bool]]:
        """As ModelHandle.loglikelihood: the same context/continuation token split."""
        sequences, starts = split_requests(self.encode, requests, chat)
        results = []
        for seq, start, logprobs in zip(sequences, starts, self._prompt_logprobs(sequences), strict=True):
            chosen = [logprobs[i][seq[i]] for i in range(start, len(seq))]  # position i: log p(seq[i] | seq[:i])
            results.append((float(sum(lp.logprob for lp in chosen)), all(lp.rank == 1 for lp in chosen)))
        return results

    def next_token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[int], batch_size: int = 16,
                            chat: bool = False, shared_prefix: bool = True,
                            desc: str = "next-token") -> list[list[float]]:
        """log p(token | prompt) for each of `token_ids`: each prompt + candidate is scored as a prompt
        (prefix caching makes the shared part cost one pass)."""
        bases = [self.encode(p, chat) for p in prompts]
        sequences = [base + [token] for base in bases for token in token_ids]
        rows = self._prompt_logprobs(sequences)
        k = len(token_ids)
        return [[rows[i * k + j][-1][token].logprob for j, token in enumerate(token_ids)]
                for i in range(len(prompts))]


def is_encoder_decoder(weights: ModelWeights, location: str) -> bool:
    """From the model in memory, else the config saved at `location`. A config that cannot be read
    here (a hub id offline) counts as decoder-only: vLLM reports its own error when it cannot either."""
    if weights.module is not None:
        return bool(getattr(weights.module.config, "is_encoder_decoder", False))
    from transformers import AutoConfig

    try:
        return bool(AutoConfig.from_pretrained(location).is_encoder_decoder)
    except (OSError, ValueError):
        return False


def open_vllm(weights: ModelWeights, tokenizer, fmt: ChatFormat, device: torch.device) -> VLLMHandle:
    """vLLM loads the weights itself: the checkpoint this cell trained, or the base model's source.
    Encoder-decoder models (T5) are refused: this backend scores prompt log-probs of one token stream,
    which an encoder-decoder does not have."""
    location = weights.location()
    if is_encoder_decoder(weights, location):
        raise ConfigError(f"eval_backend=vllm serves decoder-only models; model '{weights.base.name}' is an "
                          "encoder-decoder (T5 family): use eval_backend=hf")
    weights.release()
    return VLLMHandle(location, tokenizer, fmt, weights.trained, dtype=weights.base.dtype, seed=weights.seed)


BACKENDS.register("vllm", open_vllm)
