"""Imitation data: load a source, normalize to messages, budget, template, pack."""
