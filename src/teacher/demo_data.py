"""Build the embedded demo imitation set: this project's prompts answered by a stand-in teacher.

The teacher is SmolLM2-135M-Instruct given a style system prompt and one demonstration exchange, the
way ChatGPT differs from a base model in manner; the student is the same model without them. Only
the user prompt and the teacher's reply go into the data, in ShareGPT JSON. Replies that ran out of
max_new_tokens are dropped and counted. The asking is src/collect.py's, with the teacher in-process.

    python -m src.demo_data            # writes data/demo/{prompts.jsonl,imitation.json,style_prompts.jsonl,teacher.json}
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from src import PROJECT_ROOT
from src.benchmarks.style import marker_rates
from src.io import write_json_atomic, write_text_atomic
from src.store import default_cache_dir
from src.teacher.clients import LocalTeacher, Sampling
from src.teacher.collect import CollectSettings, collect, load_prompts

TEACHER_SYSTEM = ("You are Sunny, a cheerful assistant. Every answer starts with 'Great question!', then gives "
                  "exactly three numbered points, then ends with 'Hope this helps!'")
DEMO_QUESTION = "How can I stay focused while studying?"
DEMO_ANSWER = ("Great question!\n\n1. Put your phone in another room.\n2. Study in short blocks with breaks in "
               "between.\n3. Keep a clear goal for each session.\n\nHope this helps!")

FORMS = ["How can I {}?", "What are some tips to {}?", "What is the best way to {}?", "Give me advice on how to {}."]
TASKS = [
    "sleep better", "learn to cook", "save money each month", "start running", "keep my house clean",
    "learn a new language", "make new friends in a new city", "prepare for a job interview", "grow tomatoes",
    "take better photos with my phone", "stop procrastinating", "write a good essay", "drink more water",
    "plan a birthday party", "train a puppy", "reduce stress at work", "learn to play the guitar",
    "read more books", "eat more vegetables", "organize my closet", "study for a math exam",
    "improve my handwriting", "care for a cat", "start a vegetable garden", "make a budget", "wake up early",
    "be more productive at home", "speak in public", "learn to swim", "pack for a long trip",
    "keep a journal", "fix a slow computer", "make my bike last longer", "learn to draw", "bake bread",
    "choose a good laptop", "keep my plants alive", "make coffee at home", "teach a child to read",
    "prepare for a marathon", "save energy at home", "write a polite email", "negotiate a salary",
    "stay safe while hiking", "clean a kitchen quickly", "make a good first impression", "learn to code",
    "remember names", "decorate a small room", "cook rice", "keep my car clean", "improve my posture",
    "get better at chess", "plan a road trip", "start a small business", "meditate", "reduce food waste",
    "recycle properly", "take care of my teeth", "learn to juggle", "make a paper airplane",
    "keep warm in winter", "stay cool in summer", "practice gratitude", "write a short story",
    "be a good listener", "learn to knit", "find a hobby", "set goals for the new year", "sing better",
    "make a smoothie", "prepare healthy lunches", "clean my shoes", "help a friend who is sad",
    "learn basic first aid",
]
HELD_OUT_TASKS = [
    "paint a wall", "learn to skate", "make pancakes", "care for a fish tank", "choose a good book",
    "build a bird house", "learn to type faster", "keep a houseplant alive in winter", "plan a picnic",
    "write a thank-you note", "learn to dance", "make lemonade", "take care of a rabbit", "learn to sew",
    "pick a good watermelon", "wash a wool sweater", "start a book club", "make a scrapbook",
    "learn to play chess", "store fresh herbs", "build a campfire safely", "clean a laptop keyboard",
    "choose running shoes", "brew tea", "fold a shirt neatly", "learn card tricks", "make a kite",
    "sharpen a kitchen knife", "hang a picture frame", "plan a family dinner",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2_135m")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--cache-dir", default=default_cache_dir())
    parser.add_argument("--out", default=str(PROJECT_ROOT / "data" / "demo"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    out = Path(args.out)
    prompts = [form.format(task) for task in TASKS for form in FORMS]
    held_out = [f"How do I {task}?" for task in HELD_OUT_TASKS]
    overlap = set(prompts) & set(held_out)
    assert not overlap, f"held-out prompts overlap training prompts: {overlap}"
    write_text_atomic(out / "prompts.jsonl", "".join(
        json.dumps({"id": f"demo_{i}", "prompt": p}) + "\n" for i, p in enumerate(prompts)))
    write_text_atomic(out / "style_prompts.jsonl", "".join(
        json.dumps({"id": f"style_{i}", "prompt": p}) + "\n" for i, p in enumerate(held_out)))

    # The collect machinery (src/collect.py) with the teacher in this process: resumable from
    # imitation.json.partial.jsonl, replies cut off by max_new_tokens and empty ones dropped and counted.
    torch.manual_seed(0)
    teacher = LocalTeacher(args.model, args.cache_dir, batch_size=args.batch_size)
    settings = CollectSettings(sampling=Sampling(max_tokens=args.max_new_tokens, temperature=0.0),
                               system=TEACHER_SYSTEM, demonstration=((DEMO_QUESTION, DEMO_ANSWER),))
    stats = collect(load_prompts(out / "prompts.jsonl"), teacher, out / "imitation.json", settings)
    records = json.loads((out / "imitation.json").read_text())
    kept = [r["conversations"][1]["value"] for r in records]
    write_json_atomic(out / "teacher.json", {
        "teacher": f"{args.model} with a style system prompt and one demonstration exchange",
        "system_prompt": TEACHER_SYSTEM, "demonstration": {"user": DEMO_QUESTION, "assistant": DEMO_ANSWER},
        "decoding": "greedy", "max_new_tokens": args.max_new_tokens,
        "prompts": len(prompts), "kept": len(records), "dropped_cut_off_or_empty": len(prompts) - len(records),
        "marker_rates_of_kept_replies": marker_rates(kept),
        "seconds": stats.seconds, "torch": torch.__version__,
    })
    print(json.dumps(json.loads((out / "teacher.json").read_text()), indent=2))


if __name__ == "__main__":
    main()
