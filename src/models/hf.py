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
from src.models.seq2seq import Seq2SeqHandle
from src.progress import progress

PACK_TOKENS = 512  # suffix tokens per forward on a shared prefix: each attends over prefix + pack


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
        rows = self.logprobs_at(sequences, positions, batch_size, shared_prefix, desc)
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
        rows = self.logprobs_at(sequences, positions, batch_size, shared_prefix, desc)
        ids = torch.tensor(list(token_ids))
        return [row[0, ids].tolist() for row in rows]

    def logprobs_at(self, sequences: list[list[int]], positions: list[list[int]], batch_size: int,
                    shared_prefix: bool, desc: str) -> list[torch.Tensor]:
        """Log-softmax over the vocabulary at the given positions of each sequence ([len(pos), vocab]).
        Public for callers that need whole distributions, not a continuation's log-likelihood (the
        uncertainty selector's entropy, src/teacher/select.py); the hf backend's own.

        Shared prefix: the longest common token prefix (cut at tokens, not characters: text ending in a blank
        line does not tokenize to a prefix of the whole prompt) is run once, and only the suffixes are run
        against its KV cache (see _suffixes_on_prefix). Without one, sequences run in right-padded batches:
        causal attention never lets a real token see a pad after it."""
        self.model.eval()
        prefix_len = _common_prefix_length(sequences) if shared_prefix and len(sequences) > 1 else 0
        # every suffix keeps at least one token and every wanted position stays in the suffix
        prefix_len = min([prefix_len] + [p[0] for p in positions])
        if prefix_len > 0:
            return self._suffixes_on_prefix(sequences, positions, prefix_len, batch_size, desc)
        decoder = self.model.base_model
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))  # similar lengths together
        results: list[torch.Tensor] = [torch.empty(0)] * len(sequences)
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        pad = self.tokenizer.pad_token_id
        for batch in progress(batches, desc):
            width = max(len(sequences[i]) for i in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                input_ids[row, :len(sequences[i])] = torch.tensor(sequences[i])
                attention[row, :len(sequences[i])] = 1
            hidden = decoder(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                             use_cache=False).last_hidden_state
            for row, i in enumerate(batch):
                results[i] = self._head_logprobs(hidden[row], positions[i])
        return results

    def _suffixes_on_prefix(self, sequences: list[list[int]], positions: list[list[int]], prefix_len: int,
                            batch_size: int, desc: str) -> list[torch.Tensor]:
        """The prefix runs once; then up to `batch_size` suffixes at a time (at most PACK_TOKENS tokens
        unless one suffix is longer) are laid end to end in one row after it, with a mask that lets each
        suffix token see the whole prefix and the earlier tokens of its own suffix only, and positions
        that continue from the prefix for each suffix. One row: the prefix's keys and values are never
        copied per question (a batch of B rows would repeat them B times) and no pad is computed."""
        decoder = self.model.base_model
        prefix = torch.tensor([sequences[0][:prefix_len]], device=self.device)
        cache = decoder(input_ids=prefix, use_cache=True).past_key_values
        results: list[torch.Tensor] = [torch.empty(0)] * len(sequences)
        groups: list[list[int]] = [[]]
        tokens = 0
        for i in range(len(sequences)):
            size = len(sequences[i]) - prefix_len
            if groups[-1] and (len(groups[-1]) >= batch_size or tokens + size > PACK_TOKENS):
                groups.append([])
                tokens = 0
            groups[-1].append(i)
            tokens += size
        for group in progress(groups, desc):
            suffixes = [sequences[i][prefix_len:] for i in group]
            width = sum(len(s) for s in suffixes)
            mask = torch.zeros((1, 1, width, prefix_len + width), dtype=torch.bool)
            mask[..., :prefix_len] = True
            position_ids, at = [], 0
            for suffix in suffixes:
                n = len(suffix)
                mask[0, 0, at:at + n, prefix_len + at:prefix_len + at + n] = torch.ones(n, n, dtype=torch.bool).tril()
                position_ids += range(prefix_len, prefix_len + n)
                at += n
            input_ids = torch.tensor([[t for s in suffixes for t in s]], device=self.device)
            hidden = decoder(input_ids=input_ids, attention_mask=mask.to(self.device),
                             position_ids=torch.tensor([position_ids], device=self.device),
                             past_key_values=copy.deepcopy(cache), use_cache=True).last_hidden_state[0]
            at = 0
            for i, suffix in zip(group, suffixes, strict=True):
                results[i] = self._head_logprobs(hidden[at:at + len(suffix)], [p - prefix_len for p in positions[i]])
                at += len(suffix)
        return results

    def _head_logprobs(self, hidden: torch.Tensor, wanted: list[int]) -> torch.Tensor:
        """Log-softmax of the output head at the `wanted` rows of `hidden` only: vocabularies are big."""
        logits = self.model.get_output_embeddings()(hidden[torch.tensor(wanted, device=hidden.device)]).float()
        return torch.log_softmax(logits, dim=-1).cpu()


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
    return handle_for(model, tokenizer, chat_format(tokenizer, cfg.chat_template), device, trained)


def handle_for(model, tokenizer, fmt: ChatFormat, device: torch.device, trained: bool):
    """ModelHandle for a decoder-only model; Seq2SeqHandle (src/models/seq2seq.py) for an encoder-decoder one."""
    seq2seq = getattr(getattr(model, "config", None), "is_encoder_decoder", False)
    return (Seq2SeqHandle if seq2seq else ModelHandle)(model, tokenizer, fmt, device, trained)


def open_hf(weights: ModelWeights, tokenizer, fmt: ChatFormat, device: torch.device) -> ModelHandle | Seq2SeqHandle:
    return handle_for(weights.load(device, tokenizer), tokenizer, fmt, device, trained=weights.trained)


BACKENDS.register("hf", open_hf)
