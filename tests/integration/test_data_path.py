"""The real-data path: prompt templates, step segmentation, and `arbor eval` on MATH500."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from arbor.actors.search.hf_backend import separator_seen
from arbor.core.config import DataConfig, load_config
from arbor.core.errors import DataError
from arbor.core.model import build_tiny_model, save_checkpoint
from arbor.core.tasks.jsonl import JsonlTask, as_steps
from arbor.core.tokenizer import build_char_tokenizer
from arbor.launch.cli import main
from arbor.reward import verify
from tests.conftest import REPO, SHARED_DATA, TINY

MATH500 = SHARED_DATA / "math500_test.jsonl"
needs_data = pytest.mark.skipif(not MATH500.is_file(), reason=f"shared data sets not found in {SHARED_DATA}")
CHAT = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _gsm8k(tmp_path: Path, n: int = 8) -> Path:
    rows = [{"question": f"What is {i} + 1?", "answer": f"Add one.\n{i} + 1 = {i + 1}\n#### {i + 1}"} for i in range(n)]
    path = tmp_path / "g.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_few_shot_prompts_lead_with_worked_examples_kept_out_of_training_and_eval(tmp_path: Path) -> None:
    task = JsonlTask(
        "gsm8k", DataConfig(path=str(_gsm8k(tmp_path)), template="few_shot", few_shot=2, eval_fraction=0.2)
    )
    prompt = task.eval_problems()[0].prompt
    first, second = (
        "What is 0 + 1?\nAdd one.\n0 + 1 = 1\nAnswer: 1\n\n",
        "What is 1 + 1?\nAdd one.\n1 + 1 = 2\nAnswer: 2\n\n",
    )
    assert prompt.startswith(first + second) and prompt.endswith("What is 7 + 1?\n")
    used = [task.train_problem(i).uid for i in range(len(task.train_dataset))] + [p.uid for p in task.eval_problems()]
    assert sorted(used) == [f"gsm8k/g.jsonl:{line}" for line in range(3, 9)]  # rows 1-2 only as examples


def test_chat_template_wraps_the_question(tmp_path: Path) -> None:
    tokenizer = build_char_tokenizer()
    with pytest.raises(DataError, match="has no chat template"):
        JsonlTask("gsm8k", DataConfig(path=str(_gsm8k(tmp_path)), template="chat"), tokenizer=tokenizer)
    tokenizer.chat_template = CHAT
    task = JsonlTask("gsm8k", DataConfig(path=str(_gsm8k(tmp_path)), template="chat"), tokenizer=tokenizer)
    assert task.train_problem(0).prompt == "<|user|>What is 0 + 1?\n<|assistant|>\n"
    tokenizer.save_pretrained(tmp_path / "tok")  # task.data.tokenizer: the template from a directory instead
    cfg = DataConfig(path=str(_gsm8k(tmp_path)), template="chat", tokenizer=str(tmp_path / "tok"))
    assert JsonlTask("gsm8k", cfg).train_problem(0).prompt.startswith("<|user|>")


def test_paragraph_steps_segment_gold_traces_and_end_search_steps() -> None:
    worked = "First line.\nStill the first step.\n\n  \nSecond step.\n\n\nThird."
    assert as_steps(worked, "paragraph") == ["First line.\nStill the first step.", "Second step.", "Third."]
    assert as_steps(worked, "line") == ["First line.", "Still the first step.", "Second step.", "Third."]
    # a character tokenizer writes "\n\n" as two tokens: the backend sees the separator across them
    tail, ends = "", []
    for ch in "a\nb\n\n":
        ended, tail = separator_seen(tail, ch, "\n\n")
        ends.append(ended)
    assert ends == [False, False, False, False, True]
    assert separator_seen("", "x\n\ny", "\n\n")[0] and not separator_seen("", "\n", "\n")[1]


def test_paragraph_task_traces_verify(tmp_path: Path) -> None:
    row = {"problem": "Find $x$.", "solution": "We have $x=2$.\nSo\n\n$x = \\boxed{2}$.", "answer": "2"}
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps(row | {"problem": "Find $y$."}) + "\n")
    task = JsonlTask("math", DataConfig(path=str(path), steps="paragraph", eval_fraction=0.5))
    p = task.train_problem(0)
    assert p.solution == "We have $x=2$.\nSo\n\n$x = \\boxed{2}$.\n\nAnswer: 2"
    assert verify("math", p.solution, p.reference)


@needs_data
def test_eval_on_math500_scores_a_tiny_random_model_near_zero_and_the_solutions_near_one(tmp_path: Path) -> None:
    config = str(REPO / "configs" / "math500.yaml")
    common = [f"task.data.path={MATH500}", f"run.root={tmp_path / 'runs'}", "wandb.mode=disabled"]
    tokenizer = build_char_tokenizer()  # "any local HF model directory": a random 2-layer one
    shape = dataclasses.replace(load_config(None, TINY).model, max_seq_len=2048)
    model_dir = save_checkpoint(tmp_path / "random", build_tiny_model(shape, tokenizer), tokenizer)
    fast = ["task.eval_size=40", "eval.max_new_tokens=12", "eval.batch_size=20", "threads=1"]
    assert main(["eval", config, *common, *fast, f"model.path={model_dir}"]) == 0
    (run,) = (tmp_path / "runs").glob("eval-*")
    random_result = json.loads((run / "eval_result.json").read_text())
    assert random_result["num_problems"] == 40 and random_result["greedy_accuracy"] <= 0.05

    # the data file itself as the responses: each row's solution, matched to its problem by the question
    assert main(["eval", config, *common, f"eval.responses={MATH500}", "eval.response_key=solution"]) == 0
    (run,) = [r for r in (tmp_path / "runs").glob("eval-*") if r.name != run.name]
    given = json.loads((run / "eval_result.json").read_text())
    assert given["num_problems"] == 500 and given["missing"] == 0 and given["greedy_accuracy"] >= 0.99
