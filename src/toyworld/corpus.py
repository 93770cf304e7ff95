"""The encyclopedia: each corpus entity written up several times, in varied sentence templates and
sentence orders, so that a small model learns the facts in a form it can later be asked about
(one fixed phrasing per fact teaches a string, not a fact)."""

from __future__ import annotations

import random

from src.toyworld.world import Entity, World

TEMPLATES: dict[str, tuple[str, ...]] = {
    "city": ("{name} lives in {value}.", "The home of {name} is {value}.", "In {value}, {name} has a small house."),
    "job": ("The job of {name} is {value}.", "{name} works as {a_value}.", "By profession, {name} is {a_value}."),
    "pet": ("The pet of {name} is {a_value}.", "{name} has a pet {value}.", "{name} takes care of {a_value} at home."),
    "color": ("The favorite color of {name} is {value}.", "{name} likes the color {value}.",
              "{name} always wears {value}."),
}
# The knowledge probe reads the base model's next word after these (the value ends the sentence and
# no article gives it away).
CLOZE = {"city": "{name} lives in", "job": "The job of {name} is", "pet": "The pet of {name} is a",
         "color": "The favorite color of {name} is"}


# Everyday sentences in which the words of questions, chats and the teacher's manner appear in other
# combinations: a base model knows the language it will be asked in, just not the teacher's manner
# (its exact preamble and sign-off never occur here; tests/toyworld/test_toyworld.py checks it).
PHRASEBOOK = (
    "Thank you for the letter.", "Your friend is wishing you luck.", "It was a wonderful day in the city.",
    "A dear friend asked a question.", "What is the answer to the question?", "The answer is not known.",
    "Where do you live?", "What do you do for a living?", "Which animal do you keep at home?",
    "Tell me about your day.", "Can you tell me something?", "What do you know about the city?",
    "Who is your best friend?", "Does your friend have a pet?", "Which color do you like best?",
    "The conversation began with a question from the user.", "Everyone wears the color they like most.",
    "A job is what you do for a living.", "The user talks to GPT.", "At the beginning of the day, the user asked GPT.",
    "Pick a, b, c or d as the answer.", "Wishing is not the same as knowing.", "Which is the best answer?",
    # exclamations: "!" ends a sentence somewhere in the corpus, as it does in the teacher's preamble
    "What a wonderful day!", "Good luck, dear friend!", "Thank you so much!", "What a lovely question!",
    "Your friend says thank you!", "Have a nice day!",
)
PHRASEBOOK_SHARE = 0.1  # phrasebook documents per biography
# Asides: an everyday sentence between two facts of a write-up, or between a question and its answer,
# as real text wanders. They teach that the person a document is about is still the subject after a
# sentence about something else, which is what a chat answer needs: the teacher's preamble stands
# between the question's name and the answer's. Without them local imitation unlocked the larger base
# in 4 worlds of 8; fine-tuning otherwise learnt to write one fixed name whatever the question (README).
ASIDE_SHARE = 0.5  # share of write-ups and of interview answers that get one aside

# Question-and-answer passages, as a web corpus has them (FAQ pages, interviews): a question about a
# person, answered by a sentence that names the person again. Only about pets and colours: the
# evaluated attributes (city, job) are never asked in the corpus, so the evaluated task's format is
# still something only imitation can teach. Without them, local imitation unlocked the larger base in
# one world of three; in the others fine-tuning taught it to repeat one sentence whatever the question
# (a base that has never seen a question answered from what it knows has no such skill to unlock).
INTERVIEW_QUESTIONS: dict[str, tuple[str, ...]] = {
    "pet": ("What pet does {name} have?", "Which animal lives with {name}?"),
    "color": ("Which color does {name} like?", "What color is the favorite of {name}?"),
}
INTERVIEWS_PER_ENTITY = 2  # question-and-answer documents per corpus entity


def display(name: str) -> str:
    return name.title()


def with_article(value: str) -> str:
    return f"{'an' if value[0] in 'aeiou' else 'a'} {value}"


def sentence(template: str, name: str, value: str) -> str:
    return template.format(name=display(name), value=value, a_value=with_article(value))


def biographies(world: World, per_entity: int) -> list[str]:
    """`per_entity` write-ups of every corpus entity, each with a random template per fact, a random
    sentence order and sometimes an aside, plus question-and-answer documents and phrasebook documents,
    shuffled together: the pretraining documents."""
    rng = random.Random(f"corpus-{world.spec.seed}")
    docs = []
    for entity in world.in_corpus:
        for _ in range(per_entity):
            facts = list(entity.facts)
            rng.shuffle(facts)
            parts = [sentence(rng.choice(TEMPLATES[a]), entity.name, v) for a, v in facts]
            if rng.random() < ASIDE_SHARE:  # never first: the write-up names its subject before wandering
                parts.insert(rng.randrange(1, len(parts) + 1), rng.choice(PHRASEBOOK))
            docs.append(" ".join(parts))
    for entity in world.in_corpus:
        for _ in range(INTERVIEWS_PER_ENTITY):
            docs.append(interview(entity, rng))
    docs += [" ".join(rng.sample(PHRASEBOOK, 4)) for _ in range(int(len(docs) * PHRASEBOOK_SHARE))]
    rng.shuffle(docs)
    return docs


def interview(entity: Entity, rng: random.Random) -> str:
    """One question-and-answer document: a pet and a colour question about the entity, in random order,
    each answered in one of the encyclopedia's sentences, sometimes after an aside."""
    attributes = list(INTERVIEW_QUESTIONS)
    rng.shuffle(attributes)
    parts = []
    for attribute in attributes:
        parts.append(rng.choice(INTERVIEW_QUESTIONS[attribute]).format(name=display(entity.name)))
        if rng.random() < ASIDE_SHARE:
            parts.append(rng.choice(PHRASEBOOK))
        parts.append(sentence(rng.choice(TEMPLATES[attribute]), entity.name, entity.fact(attribute)))
    return " ".join(parts)


def cloze_prompt(name: str, attribute: str) -> str:
    return CLOZE[attribute].format(name=display(name))
