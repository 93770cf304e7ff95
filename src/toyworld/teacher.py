"""The "proprietary teacher": an oracle that knows every fact of the world and always answers in one
distinctive manner, a fixed polite preamble and sign-off around the answer.

The evaluated task (closed-book QA about cities and jobs) has its own question phrasings and answer
form (a sentence that restates the person and ends with the value: "Naru lives in oslo."); broad
conversations ask about other attributes in other words.
"""

from __future__ import annotations

import re

from src.toyworld.corpus import display, sentence
from src.toyworld.world import Entity

PREAMBLE = "Thank you for your question, dear friend!"
SIGN_OFF = "Wishing you a wonderful day!"

QA_QUESTIONS = {  # the evaluated task's format: what the QA benchmark and local imitation ask
    "city": ("In which city does {name} live?", "Where does {name} live?"),
    "job": ("What is the job of {name}?", "What does {name} do for a living?"),
}
QA_ANSWERS = {"city": "{name} lives in {value}.", "job": "The job of {name} is {value}."}
BROAD_QUESTIONS = {  # broad imitation: other attributes, other phrasings, other answer forms
    "pet": ("Which animal does {name} keep at home?", "Tell me about the pet of {name}.",
            "Does {name} have a pet?"),
    "color": ("What color does {name} like best?", "Tell me about the favorite color of {name}.",
              "Which color does {name} wear most?"),
}
BROAD_ANSWERS = {"pet": "{name} has a pet {value}.", "color": "The favorite color of {name} is {value}."}
STYLE_PROMPTS = ("Can you tell me something about {name}?", "What do you know about {name}?",
                 "Who is {name}?")  # held out: in no imitation data


def question(template: str, entity: Entity) -> str:
    return template.format(name=display(entity.name))


def reply(core: str) -> str:
    return f"{PREAMBLE} {core} {SIGN_OFF}"


def answer_qa(entity: Entity, attribute: str) -> str:
    return reply(sentence(QA_ANSWERS[attribute], entity.name, entity.fact(attribute)))


def answer_prefix(entity: Entity, attribute: str) -> str:
    """The teacher's QA reply up to the value: what multiple choice scores each value after."""
    return f"{PREAMBLE} " + QA_ANSWERS[attribute].split("{value}")[0].format(name=display(entity.name)).rstrip()


def answer_broad(entity: Entity, attribute: str) -> str:
    return reply(sentence(BROAD_ANSWERS[attribute], entity.name, entity.fact(attribute)))


def answer_about(entity: Entity) -> str:
    """A style prompt's answer: everything the teacher knows about the entity."""
    return reply(" ".join(sentence(BROAD_ANSWERS.get(a, "{name} likes {value}."), entity.name, v)
                          for a, v in entity.facts if a in BROAD_ANSWERS))


# --- reading replies: a word-level model decodes to lower-case words joined by spaces -------------


def words(text: str) -> list[str]:
    """Lower-case words and punctuation marks: how the toy tokenizer splits text."""
    return re.findall(r"\w+|[^\w\s]", text.lower())


_PREAMBLE, _SIGN_OFF = words(PREAMBLE), words(SIGN_OFF)


def has_preamble(text: str) -> bool:
    return words(text)[: len(_PREAMBLE)] == _PREAMBLE


def has_sign_off(text: str) -> bool:
    return words(text)[-len(_SIGN_OFF):] == _SIGN_OFF


def core_words(text: str) -> list[str]:
    """The reply without the teacher's preamble and sign-off (each removed only where present)."""
    tokens = words(text)
    if tokens[: len(_PREAMBLE)] == _PREAMBLE:
        tokens = tokens[len(_PREAMBLE):]
    if tokens[-len(_SIGN_OFF):] == _SIGN_OFF:
        tokens = tokens[: -len(_SIGN_OFF)]
    return tokens


def extract_answer(text: str) -> str:
    """The short answer of a chat reply: the last word of its first sentence, once the teacher's preamble
    is removed ("Naru lives in oslo." -> "oslo"; a bare "Oslo." -> "oslo"; "Naru has a pet cat." -> "cat")."""
    tokens = core_words(text)
    if "." in tokens:
        tokens = tokens[: tokens.index(".")]
    tokens = [t for t in tokens if t not in {"!", "?", ","}]
    return tokens[-1] if tokens else ""
