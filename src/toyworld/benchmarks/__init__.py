"""The toy world's benchmarks (registered by src/toyworld/plugin.py): closed-book chat QA (the NQ
analogue), cloze knowledge, four-way multiple choice (the MMLU analogue) and the teacher's style."""
