"""The HF backend: a transformers model in this process, batched generation and batched
log-likelihoods (with the shared prompt prefix computed once). Runs everywhere."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from src.config import ModelConfig
from src.data.template import ChatFormat, bos_prefix, chat_format
from src.models.backend import BACKENDS, ModelWeights
from src.models.load import load_model, load_tokenizer
from src.models.prompts import chat_prompt, cut_at_stop, encode_prompt, split_requests
from src.progress import progress


class ModelHandle:
    """What a benchmark sees of a model: batched generation and batched log-likelihoods."""

    def __init__(self, model, tokenizer, fmt: ChatFormat, device: torch.device, trained: bool):
        self.model = model
        self.tokenizer = tokenizer
        self.format = fmt
        self.device = device
        self.trained = trained  # imitation-trained (True) or the base model (False)

    @property
    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def chat_prompt(self, user_text: str) -> str:
        return chat_prompt(self.format, user_text)

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = (),
                 batch_size: int = 8, chat: bool = False, desc: str = "generate",
                 repetition_penalty: float = 1.0, finished: list[bool] | None = None,
                 temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
                 top_k: int = 0, lengths: list[int] | None = None) -> list[str]:
        """Continuations (greedy when temperature is 0, else sampled from the top_p nucleus, and from the
        top_k most likely tokens when top_k > 0; `seed` makes samples repeatable), cut at the first stop
        string. Prompts are batched by length with left
        padding; `chat` prompts are already rendered by the chat format (so no BOS is added twice).
        If `finished` is a list, it receives per prompt whether the model ended its reply (EOS or a
        stop string) rather than running out of max_new_tokens; if `lengths` is a list, the number of
        tokens generated per prompt (through its EOS, padding after it not counted)."""
        tok = self.tokenizer
        tok.padding_side = "left"
        self.model.eval()
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths batch together
        if temperature > 0 and len(prompts) <= batch_size:
            # one batch either way: keep the caller's order, because each row's random draws follow its
            # place in the batch, so a seed reproduces a sample for the order the caller chose
            order = list(range(len(prompts)))
        outputs: list[str] = [""] * len(prompts)
        ended: list[bool] = [False] * len(prompts)
        counts: list[int] = [0] * len(prompts)
        prefix = bos_prefix(tok, self.format) if chat else []
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        sampling = {"do_sample": False}
        if temperature > 0:
            sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k}
            if seed is not None:
                torch.manual_seed(seed)
        for batch in progress(batches, desc):
            encoded = [prefix + tok(prompts[i], add_special_tokens=not chat)["input_ids"] for i in batch]
            width = max(len(ids) for ids in encoded)
            input_ids = torch.full((len(batch), width), tok.pad_token_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for row, ids in enumerate(encoded):
                input_ids[row, width - len(ids):] = torch.tensor(ids)
                attention[row, width - len(ids):] = 1
            generated = self.model.generate(
                input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, **sampling,
                stop_strings=list(stop) or None, tokenizer=tok if stop else None,
                repetition_penalty=repetition_penalty,
            )
            for row, i in enumerate(batch):
                new = generated[row, width:]
                text = tok.decode(new, skip_special_tokens=True)
                outputs[i] = cut_at_stop(text, stop)
                eos = (new == tok.eos_token_id).nonzero()
                ended[i] = bool(len(eos)) or len(outputs[i]) < len(text)
                # a row that ended early in a batch (EOS, or a stop string) is padded to the batch's end
                stops = ((new == tok.eos_token_id) | (new == tok.pad_token_id)).nonzero()
                first = int(stops[0, 0]) if len(stops) else len(new)
                counts[i] = first + 1 if first < len(new) and new[first] == tok.eos_token_id else first
        if finished is not None:
            finished[:] = ended
        if lengths is not None:
            lengths[:] = counts
        return outputs

    def encode(self, text: str, chat: bool = False) -> list[int]:
        return encode_prompt(self.tokenizer, self.format, text, chat)

    @torch.no_grad()
    def loglikelihood(self, requests: Sequence[tuple[str, str]], batch_size: int = 16, chat: bool = False,
                      shared_prefix: bool = True, desc: str = "loglikelihood") -> list[tuple[float, bool]]:
        """(sum of log p(continuation | context), whether greedy decoding would produce it) per request.

        The split is split_requests' (lm-evaluation-harness's). With `shared_prefix`, the longest common token prefix of all
        requests is run once and its KV cache reused for every batch (the k-shot block in MMLU)."""
        sequences, starts = split_requests(self.encode, requests, chat)
        positions = [list(range(start - 1, len(seq) - 1)) for seq, start in zip(sequences, starts, strict=True)]
        rows = self._logprobs_at(sequences, positions, batch_size, shared_prefix, desc)
        results = []
        for seq, start, logprobs in zip(sequences, starts, rows, strict=True):
            target = torch.tensor(seq[start:])
            total = float(logprobs.gather(1, target[:, None]).sum())
            greedy = bool((logprobs.argmax(dim=1) == target).all())
            results.append((total, greedy))
        return results

    @torch.no_grad()
    def next_token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[int], batch_size: int = 16,
                            chat: bool = False, shared_prefix: bool = True,
                            desc: str = "next-token") -> list[list[float]]:
        """log p(token | prompt) for each of `token_ids` after each prompt: one forward per prompt
        (MMLU's answer letters), with the prompts' shared token prefix computed once."""
        sequences = [self.encode(p, chat) for p in prompts]
        positions = [[len(seq) - 1] for seq in sequences]
        rows = self._logprobs_at(sequences, positions, batch_size, shared_prefix, desc)
        ids = torch.tensor(list(token_ids))
        return [row[0, ids].tolist() for row in rows]

    def _logprobs_at(self, sequences: list[list[int]], positions: list[list[int]], batch_size: int,
                     shared_prefix: bool, desc: str) -> list[torch.Tensor]:
        """Log-softmax over the vocabulary at the given positions of each sequence ([len(pos), vocab]).

        Shared prefix: the longest common token prefix (cut at tokens, not characters: text ending in a blank
        line does not tokenize to a prefix of the whole prompt) is run once; its KV cache is copied over each
        batch and only the suffixes are run. Suffixes are right-padded: causal attention never lets a
        real token see a pad after it, and positions continue from the prefix length."""
        self.model.eval()
        prefix_len = _common_prefix_length(sequences) if shared_prefix and len(sequences) > 1 else 0
        # every suffix keeps at least one token and every wanted position stays in the suffix
        prefix_len = min([prefix_len] + [p[0] for p in positions])
        cache = None
        decoder, head = self.model.base_model, self.model.get_output_embeddings()
        if prefix_len > 0:
            prefix = torch.tensor([sequences[0][:prefix_len]], device=self.device)
            cache = decoder(input_ids=prefix, use_cache=True).past_key_values
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))  # similar lengths together
        results: list[torch.Tensor] = [torch.empty(0)] * len(sequences)
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        pad = self.tokenizer.pad_token_id
        for batch in progress(batches, desc):
            suffixes = [sequences[i][prefix_len:] for i in batch]
            width = max(len(s) for s in suffixes)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            attention = torch.zeros((len(batch), prefix_len + width), dtype=torch.long)
            attention[:, :prefix_len] = 1
            for row, suffix in enumerate(suffixes):
                input_ids[row, :len(suffix)] = torch.tensor(suffix)
                attention[row, prefix_len:prefix_len + len(suffix)] = 1
            kwargs = {"use_cache": False}
            if cache is not None:
                batch_cache = copy.deepcopy(cache)
                batch_cache.batch_repeat_interleave(len(batch))
                kwargs = {"past_key_values": batch_cache, "use_cache": True}
            hidden = decoder(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                             **kwargs).last_hidden_state
            for row, i in enumerate(batch):
                wanted = torch.tensor(positions[i], device=self.device) - prefix_len
                logits = head(hidden[row, wanted]).float()  # only the positions asked for: vocabularies are big
                results[i] = torch.log_softmax(logits, dim=-1).cpu()
        return results


def _common_prefix_length(sequences: list[list[int]]) -> int:
    first = sequences[0]
    length = min(len(s) for s in sequences)
    for seq in sequences[1:]:
        n = 0
        while n < length and seq[n] == first[n]:
            n += 1
        length = n
    return length


def load_handle(cfg: ModelConfig, cache_dir: str, device: torch.device, trained: bool, seed: int = 0):
    tokenizer = load_tokenizer(cfg, cache_dir)
    model = load_model(cfg, tokenizer, cache_dir, device, seed=seed)
    return ModelHandle(model, tokenizer, chat_format(tokenizer, cfg.chat_template), device, trained)


def open_hf(weights: ModelWeights, tokenizer, fmt: ChatFormat, device: torch.device) -> ModelHandle:
    return ModelHandle(weights.load(device, tokenizer), tokenizer, fmt, device, trained=weights.trained)


BACKENDS.register("hf", open_hf)
