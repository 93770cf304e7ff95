"""The HF backend for encoder-decoder models (the T5 family): the Backend protocol over an
AutoModelForSeq2SeqLM. open_hf (src/models/hf.py) picks it when the model's config says
is_encoder_decoder.

The prompt, rendered and encoded exactly as the decoder-only handle does it (chat prompts by the chat
format, plain prompts with the tokenizer's own special tokens: T5's tokenizer appends </s>, as T5 was
pretrained), is the encoder's input; the reply is the decoder's output, from the decoder start token.

Tokens of a continuation: the decoder sees a continuation from its first position, so it is tokenized
on its own (`decoder_tokens`: the continuation's text, no special tokens), the way generate's output
text re-encodes. The decoder-only split (split_requests: context and continuation tokenized together)
does not apply: with a tokenizer that appends </s> the context's tokens are not a prefix of the
whole's. For BPE tokenizers (SmolLM2, GPT-2) both splits give the same tokens on the benchmarks'
requests (" A" after "Answer:" is the one token " A" either way; tests/models/test_seq2seq.py checks it),
so scores compare with the decoder-only backends.

Shared prefixes are not reused: the encoder attends both ways, so a k-shot block's encoder states
depend on the question after it and there is nothing to cache; `shared_prefix` is accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from src.data.template import ChatFormat
from src.models.prompts import chat_prompt, cut_at_stop, encode_prompt
from src.progress import progress


class Seq2SeqHandle:
    """What a benchmark sees of an encoder-decoder model: the same methods as ModelHandle."""

    def __init__(self, model, tokenizer, fmt: ChatFormat, device: torch.device, trained: bool):
        start = model.config.decoder_start_token_id
        if start is None:
            raise ValueError(f"{type(model).__name__}: the config has no decoder_start_token_id, so the "
                             "decoder has no first input to score or generate from")
        self.model = model
        self.tokenizer = tokenizer
        self.format = fmt
        self.device = device
        self.trained = trained  # imitation-trained (True) or the base model (False)
        self.decoder_start = int(start)

    @property
    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def chat_prompt(self, user_text: str) -> str:
        return chat_prompt(self.format, user_text)

    def encode(self, text: str, chat: bool = False) -> list[int]:
        """The encoder's tokens for a prompt (as the decoder-only handle encodes it)."""
        return encode_prompt(self.tokenizer, self.format, text, chat)

    def decoder_tokens(self, text: str) -> list[int]:
        """The decoder's tokens for a continuation: its text alone, without special tokens (MMLU reads
        its letter ids from here: src/benchmarks/mmlu.py letter_token_ids)."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = (),
                 batch_size: int = 8, chat: bool = False, desc: str = "generate",
                 repetition_penalty: float = 1.0, finished: list[bool] | None = None,
                 temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
                 top_k: int = 0, lengths: list[int] | None = None) -> list[str]:
        """As ModelHandle.generate: greedy at temperature 0, else sampled (top_p, top_k, seed); cut at the
        first stop string; `finished` and `lengths` filled as there. Prompts are batched by length,
        right-padded (the encoder masks pads, and T5's relative positions of the real tokens do not
        move). The decoder's start token is not counted in `lengths` and never in the text.
        repetition_penalty acts on the reply's tokens only: the prompt is in the encoder."""
        tok = self.tokenizer
        self.model.eval()
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths batch together
        if temperature > 0 and len(prompts) <= batch_size:
            # one batch either way: keep the caller's order, so a seed reproduces the caller's samples
            # (each row's random draws follow its place in the batch), as ModelHandle does
            order = list(range(len(prompts)))
        outputs: list[str] = [""] * len(prompts)
        ended: list[bool] = [False] * len(prompts)
        counts: list[int] = [0] * len(prompts)
        sampling = {"do_sample": False}
        if temperature > 0:
            sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k}
            if seed is not None:
                torch.manual_seed(seed)
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        for batch in progress(batches, desc):
            input_ids, attention = self._right_padded([self.encode(prompts[i], chat) for i in batch])
            generated = self.model.generate(
                input_ids=input_ids, attention_mask=attention, max_new_tokens=max_new_tokens,
                decoder_start_token_id=self.decoder_start, pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id, **sampling, stop_strings=list(stop) or None,
                tokenizer=tok if stop else None, repetition_penalty=repetition_penalty,
            )
            for row, i in enumerate(batch):
                new = generated[row, 1:].cpu()  # column 0 is the decoder start token
                text = tok.decode(new, skip_special_tokens=True)
                outputs[i] = cut_at_stop(text, stop)
                ended[i] = bool((new == tok.eos_token_id).any()) or len(outputs[i]) < len(text)
                # a row that ended early is padded to the batch's longest: count through its EOS only
                stops = ((new == tok.eos_token_id) | (new == tok.pad_token_id)).nonzero()
                first = int(stops[0, 0]) if len(stops) else len(new)
                counts[i] = first + 1 if first < len(new) and new[first] == tok.eos_token_id else first
        if finished is not None:
            finished[:] = ended
        if lengths is not None:
            lengths[:] = counts
        return outputs

    @torch.no_grad()
    def loglikelihood(self, requests: Sequence[tuple[str, str]], batch_size: int = 16, chat: bool = False,
                      shared_prefix: bool = True, desc: str = "loglikelihood") -> list[tuple[float, bool]]:
        """(sum of log p(continuation | context), whether greedy decoding would produce it) per request:
        the context is the encoder's input, the continuation's own tokens (decoder_tokens) the decoder's
        targets from its first position. shared_prefix is ignored (see the module's docstring)."""
        contexts, targets = [], []
        for context, continuation in requests:
            encoded, reply = self.encode(context, chat), self.decoder_tokens(continuation)
            if not encoded or not reply:
                raise ValueError(f"loglikelihood needs a non-empty context and continuation: {context[-40:]!r}")
            contexts.append(encoded)
            targets.append(reply)
        rows = self._decoder_logprobs(contexts, targets, batch_size, desc)
        results = []
        for reply, logprobs in zip(targets, rows, strict=True):
            target = torch.tensor(reply)
            total = float(logprobs.gather(1, target[:, None]).sum())
            greedy = bool((logprobs.argmax(dim=1) == target).all())
            results.append((total, greedy))
        return results

    @torch.no_grad()
    def next_token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[int], batch_size: int = 16,
                            chat: bool = False, shared_prefix: bool = True,
                            desc: str = "next-token") -> list[list[float]]:
        """log p(token | prompt) for each of `token_ids` as the decoder's first token (MMLU's answer
        letters, whose ids come from decoder_tokens). shared_prefix is ignored."""
        rows = self._decoder_logprobs([self.encode(p, chat) for p in prompts], [[] for _ in prompts],
                                      batch_size, desc)
        ids = torch.tensor(list(token_ids))
        return [row[0, ids].tolist() for row in rows]

    @torch.no_grad()
    def logprobs_at(self, sequences: list[list[int]], positions: list[list[int]], batch_size: int,
                    shared_prefix: bool, desc: str) -> list[torch.Tensor]:
        """ModelHandle.logprobs_at's contract on a decoder-only token sequence, for the uncertainty
        selector (src/teacher/select.py): position t holds the distribution over token t + 1. Here the
        tokens through the first wanted position are the prompt (the encoder's input) and the rest the
        decoder's, so the wanted positions must be one run from the prompt's last token on (the reply's
        distributions; with no reply, the first alone), which is what the selector asks for."""
        prompts, replies = [], []
        for seq, wanted in zip(sequences, positions, strict=True):
            first = wanted[0] if wanted else -1
            reply = seq[first + 1:]
            if first < 0 or wanted != list(range(first, first + len(wanted))) or len(wanted) > max(len(reply), 1):
                raise ValueError(f"an encoder-decoder model scores a run of positions from the prompt's last "
                                 f"token on (the reply's distributions); got positions {wanted[:8]} of a "
                                 f"{len(seq)}-token sequence")
            prompts.append(seq[:first + 1])
            replies.append(reply)
        rows = self._decoder_logprobs(prompts, replies, batch_size, desc)
        return [row[:len(wanted)] for row, wanted in zip(rows, positions, strict=True)]

    def _decoder_logprobs(self, prompts: list[list[int]], replies: list[list[int]], batch_size: int,
                          desc: str) -> list[torch.Tensor]:
        """Log-softmax over the vocabulary at each decoder position of each reply given its prompt
        ([len(reply), vocab]; [1, vocab] for an empty reply: the first token's distribution). The
        decoder reads the start token then the reply but its last token (teacher forcing).

        Each distinct prompt runs through the encoder once (MMLU's loglikelihood mode scores four
        choices per question) and its states serve every reply to it. Encoder and decoder inputs are
        right-padded: the encoder masks its pads, and the decoder's causal attention keeps real tokens
        off the pads after them. Up to `batch_size` prompts per encoder pass, replies per decoder pass."""
        from transformers.modeling_outputs import BaseModelOutput

        self.model.eval()
        by_prompt: dict[tuple[int, ...], list[int]] = {}
        for i, prompt in enumerate(prompts):
            by_prompt.setdefault(tuple(prompt), []).append(i)
        distinct = sorted(by_prompt, key=len, reverse=True)  # similar lengths together
        results: list[torch.Tensor] = [torch.empty(0)] * len(prompts)
        batches = [distinct[i:i + batch_size] for i in range(0, len(distinct), batch_size)]
        for batch in progress(batches, desc):
            input_ids, attention = self._right_padded([list(p) for p in batch])
            states = self.model.get_encoder()(input_ids=input_ids, attention_mask=attention).last_hidden_state
            rows = [(row, i) for row, prompt in enumerate(batch) for i in by_prompt[prompt]]
            for chunk in (rows[k:k + batch_size] for k in range(0, len(rows), batch_size)):
                which = torch.tensor([row for row, _ in chunk], device=self.device)
                decoder_ids, _ = self._right_padded([[self.decoder_start] + replies[i][:-1] for _, i in chunk])
                logits = self.model(encoder_outputs=BaseModelOutput(last_hidden_state=states[which]),
                                    attention_mask=attention[which], decoder_input_ids=decoder_ids,
                                    use_cache=False).logits
                for at, (_, i) in enumerate(chunk):
                    n = max(len(replies[i]), 1)
                    results[i] = torch.log_softmax(logits[at, :n].float(), dim=-1).cpu()
        return results

    def _right_padded(self, encoded: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, attention mask) on the device, each row's tokens first and pads after."""
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, ids in enumerate(encoded):
            input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[row, :len(ids)] = 1
        return input_ids.to(self.device), attention.to(self.device)
