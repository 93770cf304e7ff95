"""A word-level tokenizer (the `tokenizers` library) whose vocabulary is every word the toy world can
write: names, values, the corpus templates, the teacher's phrases, the chat template and the
multiple-choice format. It depends on no seed, so every toy model shares it.

Text is lower-cased and split into words and single punctuation marks; decoding joins tokens with
spaces ("thank you for your question , dear friend !"), which is why scorers compare word lists
(src.toyworld.teacher.words) rather than strings.
"""

from __future__ import annotations

import re

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from src.toyworld import corpus, teacher
from src.toyworld.world import NAMES, VALUES

SPECIAL = ("<pad>", "<unk>", "<s>", "</s>")
# formats other modules wrap around the world's text
FRAMES = ("BEGINNING OF CONVERSATION: USER: GPT:",  # the Koala chat template (src.data.template)
          "Question: Answer: A. B. C. D.")


def _template_words(template: str) -> list[str]:
    return teacher.words(re.sub(r"\{\w+\}", " ", template))


def vocabulary() -> list[str]:
    texts = [*NAMES, *(v for values in VALUES.values() for v in values), "a", "an",
             teacher.PREAMBLE, teacher.SIGN_OFF, "The answer is .", *FRAMES, *corpus.PHRASEBOOK]
    templates = [*(t for ts in corpus.TEMPLATES.values() for t in ts), *corpus.CLOZE.values(),
                 *(t for ts in corpus.INTERVIEW_QUESTIONS.values() for t in ts),
                 *(t for ts in teacher.QA_QUESTIONS.values() for t in ts),
                 *(t for ts in teacher.BROAD_QUESTIONS.values() for t in ts), *teacher.BROAD_ANSWERS.values(),
                 *teacher.STYLE_PROMPTS]
    words = {w for text in texts for w in teacher.words(text)} | {w for t in templates for w in _template_words(t)}
    return [*SPECIAL, *sorted(words)]


def build_tokenizer():
    """A transformers fast tokenizer: <s> is added in front of plain text, </s> ends a document."""
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>")
