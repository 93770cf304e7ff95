"""Loading models and tokenizers: a base model from its source (src/models/sources.py), a
fine-tuned checkpoint this project saved, or a random init for tests; and counting parameters
without loading any weights. Decoder-only models load through AutoModelForCausalLM, encoder-decoder
ones (T5, Flan-T5, UL2: `config.is_encoder_decoder`) through AutoModelForSeq2SeqLM."""

from __future__ import annotations

from pathlib import Path

import torch

from src.config import ConfigError, ModelConfig
from src.models.sources import model_source, source_of

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def load_tokenizer(cfg: ModelConfig, cache_dir: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_source(cfg, cache_dir))
    if tokenizer.pad_token_id is None:  # GPT-2 and LLaMA 1 have none; labels, not pads, define the loss
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _dropout_overrides(model_type: str, dropout: float) -> dict:
    if model_type == "gpt2":
        return {"resid_pdrop": dropout, "embd_pdrop": dropout, "attn_pdrop": dropout}
    if model_type in ("t5", "mt5", "umt5"):
        return {"dropout_rate": dropout}
    return {"attention_dropout": dropout}


def is_encoder_decoder(config) -> bool:
    """Whether a transformers config (or a model, by its config) is an encoder-decoder."""
    return bool(getattr(getattr(config, "config", config), "is_encoder_decoder", False))


def auto_class(config):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM if is_encoder_decoder(config) else AutoModelForCausalLM


def random_init_config(cfg: ModelConfig, tokenizer, dropout: float = 0.0):
    """The transformers config of a random-init model: `model.init` holds its fields, and its optional
    `model_type` (default llama; t5 for tiny_t5) picks the architecture."""
    from transformers import LlamaConfig, T5Config

    fields = dict(cfg.init)
    model_type = fields.pop("model_type", "llama")
    if model_type == "t5":
        # T5's decoder starts from its pad token; the pad here is the borrowed tokenizer's (load_tokenizer)
        return T5Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
                        dropout_rate=dropout, **fields)
    if model_type != "llama":
        raise ConfigError(f"model '{cfg.name}': model.init.model_type={model_type!r}; a random init builds llama or t5")
    # No pad id in the config: it would become the embedding's padding_idx, a row zeroed at init and
    # never trained. The pad here is a real token (SmolLM2's is <|im_end|>, every turn's end), so each
    # turn's end would enter the model as a zero vector; at the start of a packed row, where it attends
    # only to itself, that vector stays near zero through the layers and RMSNorm's backward amplifies
    # its gradient at every layer: 24+ layers of SmolLM2's width overflow to NaN (tests/training/test_loop.py).
    # Generation passes the pad id explicitly.
    return LlamaConfig(vocab_size=len(tokenizer), pad_token_id=None, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, attention_dropout=dropout, **fields)


def model_is_encoder_decoder(cfg: ModelConfig, cache_dir: str) -> bool:
    """Whether a model config names an encoder-decoder, read from its transformers config (no weights
    are loaded): prepare needs it before the model loads, to lay the data out per assistant turn."""
    from transformers import AutoConfig

    if source_of(cfg).random_init:
        return (cfg.init or {}).get("model_type", "llama") == "t5"
    return is_encoder_decoder(AutoConfig.from_pretrained(model_source(cfg, cache_dir)))


def load_model(cfg: ModelConfig, tokenizer, cache_dir: str, device: torch.device, dropout: float = 0.0,
               seed: int = 0):
    from transformers import AutoConfig

    dtype = DTYPES[cfg.dtype]
    if source_of(cfg).random_init:
        torch.manual_seed(seed)
        config = random_init_config(cfg, tokenizer, dropout)
        model = auto_class(config).from_config(config, dtype=dtype)
    else:
        source = model_source(cfg, cache_dir)
        config = AutoConfig.from_pretrained(source)
        for key, value in _dropout_overrides(config.model_type, dropout).items():
            setattr(config, key, value)
        model = auto_class(config).from_pretrained(source, config=config, dtype=dtype)
    return model.to(device)


def load_checkpoint(path: Path, dtype: str, device: torch.device):
    """A fine-tuned model this project saved (HF format)."""
    from transformers import AutoConfig

    return auto_class(AutoConfig.from_pretrained(path)).from_pretrained(path, dtype=DTYPES[dtype]).to(device)


def count_parameters(path: str | Path) -> int:
    """Parameters of the model saved at `path` (or a hub id), counted on the meta device: no weights are
    read, so a backend that loads the weights itself (vLLM) does not need an HF copy to report it."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        model = auto_class(config).from_config(config)
    return sum(p.numel() for p in model.parameters())
