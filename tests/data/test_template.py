"""The rendered masks: only assistant tokens and their end-of-turn carry labels."""

from src.data.conversation import Message as M
from src.data.template import IGNORE, KoalaTemplate, TokenizerTemplate, render

CONV = (M("system", "Be brief."), M("user", "Hi there"), M("assistant", "Hello! How can I help?"),
        M("user", "Name a color."), M("assistant", "Blue."))


def labelled_spans(rendered):
    """Contiguous runs of labelled token ids."""
    spans, current = [], []
    for token, label in zip(rendered.input_ids, rendered.labels, strict=True):
        if label != IGNORE:
            assert label == token
            current.append(token)
        elif current:
            spans.append(current)
            current = []
    if current:
        spans.append(current)
    return spans


def test_chatml_mask_is_exactly_the_replies_and_end_of_turn(tokenizer):
    rendered = render(CONV, tokenizer, TokenizerTemplate(tokenizer))
    spans = [tokenizer.decode(s) for s in labelled_spans(rendered)]
    assert spans == ["Hello! How can I help?<|im_end|>", "Blue.<|im_end|>"]
    # The whole sequence is the template's own rendering, glue newlines included (never labelled).
    full = tokenizer.apply_chat_template([{"role": m.role, "content": m.content} for m in CONV], tokenize=False)
    assert tokenizer.decode(rendered.input_ids) == full
    # Every end-of-turn token of an assistant turn is labelled; those of system/user turns are not.
    eot = tokenizer.convert_tokens_to_ids("<|im_end|>")
    positions = [i for i, t in enumerate(rendered.input_ids) if t == eot]
    assert [rendered.labels[i] != IGNORE for i in positions] == [False, False, True, False, True]


def test_chatml_reply_tokens_match_generation(tokenizer):
    """The reply is tokenized on its own, as the model produces it after the generation prompt."""
    fmt = TokenizerTemplate(tokenizer)
    rendered = render(CONV[:3], tokenizer, fmt)
    prompt = tokenizer(fmt.generation_prompt(CONV[:2]), add_special_tokens=False)["input_ids"]
    assert rendered.input_ids[: len(prompt)] == prompt
    assert all(label == IGNORE for label in rendered.labels[: len(prompt)])
    # everything after the prompt is labelled except the template's newline after <|im_end|>
    assert tokenizer.decode(rendered.input_ids[-1]) == "\n" and rendered.labels[-1] == IGNORE
    assert rendered.loss_tokens == len(rendered.input_ids) - len(prompt) - 1


def test_koala_template_text_and_mask(tokenizer):
    fmt = KoalaTemplate(tokenizer)
    rendered = render(CONV[1:], tokenizer, fmt)
    text = tokenizer.decode(rendered.input_ids)
    # SmolLM2's BOS (<|im_start|>) differs from its EOS, so Koala text gets it, as LLaMA would get <s>
    assert text == ("<|im_start|>BEGINNING OF CONVERSATION: USER: Hi there GPT:Hello! How can I help?<|im_end|>"
                    "USER: Name a color. GPT:Blue.<|im_end|>")
    assert [tokenizer.decode(s) for s in labelled_spans(rendered)] == ["Hello! How can I help?<|im_end|>",
                                                                        "Blue.<|im_end|>"]
    assert fmt.generation_prompt(CONV[1:2]) == "BEGINNING OF CONVERSATION: USER: Hi there GPT:"
