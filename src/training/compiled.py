"""`train.compile`: torch.compile of the model's decoder for the length of a training run.

The decoder (`model.base_model`, which both the loss's labelled-positions path and the full forward
call) is compiled in place; after training the compiled call is dropped again, because evaluation and
generation run other shapes (one token at a time with a cache) that would each recompile. Measured on
CPU (README, Speed): whether it pays there; it is off by default.
"""

from __future__ import annotations

import torch


def compile_decoder(model: torch.nn.Module) -> torch.nn.Module:
    """Compile the decoder in place (nn.Module.compile); returns the module to hand to `uncompile`."""
    decoder = getattr(model, "base_model", model)
    decoder.compile()
    return decoder


def uncompile(decoder: torch.nn.Module | None) -> None:
    if decoder is not None:
        decoder._compiled_call_impl = None  # what nn.Module.compile set; the eager forward again
