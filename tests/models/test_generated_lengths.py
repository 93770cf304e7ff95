"""generate(lengths=...): tokens generated per prompt, counted through the EOS and never the padding a
batch adds after a row that ended early (the server reports them as completion_tokens)."""

import copy

import torch

from src.data.template import chat_format
from src.models.hf import ModelHandle


class ScriptedModel(torch.nn.Module):
    """Returns fixed continuations, as generate would lay them out (prompt, then new tokens, padded)."""

    def __init__(self, continuations):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.continuations = continuations

    def generate(self, input_ids, attention_mask, **kwargs):
        new = torch.tensor(self.continuations[: len(input_ids)])
        return torch.cat([input_ids, new], dim=1)


def test_lengths_stop_at_eos_and_at_batch_padding(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.pad_token = "<|endoftext|>"  # a pad distinct from EOS, as many hub tokenizers have
    eos, pad = tok.eos_token_id, tok.pad_token_id
    assert eos != pad
    word = tok("hello", add_special_tokens=False)["input_ids"][0]
    handle = ModelHandle(ScriptedModel([[word, eos, pad, pad], [word, word, pad, pad], [word] * 4]), tok,
                         chat_format(tok, "auto"), torch.device("cpu"), trained=False)
    lengths = []
    handle.generate(["a", "b", "c"], max_new_tokens=4, batch_size=3, lengths=lengths)
    # through the EOS; stopped by a stop string and padded after; ran to max_new_tokens
    assert lengths == [2, 2, 4]
