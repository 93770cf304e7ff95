"""The toy world: the whole imitation study at a scale a laptop runs in minutes.

A seeded world of fictional people with a few attributes (world), written as an encyclopedia
(corpus); base models pretrained from scratch on it (tokenizer, pretrain); an oracle teacher that
knows every fact and answers in a fixed polite style (teacher); imitation data sources and benchmark
files derived from the same seed (files); and the three findings read off a finished grid (findings).
`python -m src.toyworld --help` writes the files and prints the findings.
"""
