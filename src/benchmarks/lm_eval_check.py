"""Cross-check against lm-evaluation-harness (optional extra `lm-eval`): its own MMLU prompt and
scoring over the same local hendrycks-layout data and the same in-memory model.

The task files written here copy lm-eval's mmlu template (description, doc_to_text, letters as choices,
first-n few-shot from dev) but read our CSVs instead of cais/mmlu from the hub.
"""

from __future__ import annotations

import json
from pathlib import Path

from src import resolve_path
from src.benchmarks.mmlu import list_subjects

COLUMNS = ["question", "A", "B", "C", "D", "answer"]


def write_tasks(data_path: str, directory: Path, subjects: list[str] | None = None) -> list[str]:
    """One lm-eval task YAML per subject under `directory`; returns the task names."""
    root = resolve_path(data_path)
    directory.mkdir(parents=True, exist_ok=True)
    names = []
    for subject in subjects or list_subjects(data_path):
        name = f"imitation_gap_mmlu_{subject}"
        task = {
            "task": name,
            "dataset_path": "csv",
            "dataset_kwargs": {"data_files": {"dev": str(root / "dev" / f"{subject}_dev.csv"),
                                              "test": str(root / "test" / f"{subject}_test.csv")},
                               "column_names": COLUMNS},
            "test_split": "test",
            "fewshot_split": "dev",
            "fewshot_config": {"sampler": "first_n"},
            "output_type": "multiple_choice",
            "description": f"The following are multiple choice questions (with answers) about "
                           f"{subject.replace('_', ' ')}.\n\n",
            "doc_to_text": "{{question.strip()}}\nA. {{A}}\nB. {{B}}\nC. {{C}}\nD. {{D}}\nAnswer:",
            "doc_to_choice": ["A", "B", "C", "D"],
            "doc_to_target": "{{['A', 'B', 'C', 'D'].index(answer.strip())}}",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1.0},
        }
        (directory / f"{name}.yaml").write_text(json.dumps(task, indent=1))  # JSON is valid YAML
        names.append(name)
    return names


def run_lm_eval(model, tokenizer, data_path: str, directory: Path, shots: int = 5, batch_size: int = 8,
                subjects: list[str] | None = None) -> dict:
    """{"acc": {subject: accuracy}, "predictions": {subject: [letter index per question]}}."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    names = write_tasks(data_path, directory, subjects)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out = lm_eval.simple_evaluate(model=lm, tasks=names, num_fewshot=shots, log_samples=True,
                                  task_manager=TaskManager(include_path=str(directory)))
    prefix = "imitation_gap_mmlu_"
    acc, predictions = {}, {}
    for name in names:
        subject = name.removeprefix(prefix)
        acc[subject] = out["results"][name]["acc,none"]
        samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
        predictions[subject] = [max(range(4), key=lambda i, s=s: s["filtered_resps"][i][0]) for s in samples]
    return {"acc": acc, "predictions": predictions}
