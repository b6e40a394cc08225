"""Config: every shipped recipe loads; overrides apply; bad keys and types are named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from arbor.core.config import ArborConfig, load_config, to_yaml
from arbor.core.errors import ConfigError
from tests.conftest import DEFAULT_CONFIG, REPO

RECIPES = sorted((REPO / "configs").glob("*.yaml"))


def test_recipes_exist():
    names = {p.name for p in RECIPES}
    assert {"countdown_tiny.yaml", "arith_tiny.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_loads(path: Path):
    cfg = load_config(path)
    assert isinstance(cfg, ArborConfig)
    assert cfg.task.name in ("countdown", "arith", "gsm8k", "math")


def test_overrides_apply_with_types():
    cfg = load_config(DEFAULT_CONFIG, ["sft.steps=7", "sft.lr=0.5", "eval.ks=[1,2,8]", "model.path=/x"])
    assert cfg.sft.steps == 7 and isinstance(cfg.sft.steps, int)
    assert cfg.sft.lr == 0.5
    assert cfg.eval.ks == [1, 2, 8]
    assert cfg.model.path == "/x"


def test_recipe_values_override_defaults(tmp_path: Path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task:\n  countdown:\n    max_operand: 9\n")
    assert load_config(recipe).task.countdown.max_operand == 9
    assert load_config(recipe, ["task.countdown.max_operand=11"]).task.countdown.max_operand == 11


def test_unknown_override_names_full_dotted_key():
    with pytest.raises(ConfigError, match=r"no_such\.key"):
        load_config(DEFAULT_CONFIG, ["no_such.key=1"])
    with pytest.raises(ConfigError, match=r"sft\.no_such"):
        load_config(DEFAULT_CONFIG, ["sft.no_such=1"])


def test_unknown_key_in_yaml_names_file_and_key(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sft:\n  steps: 3\n  nested:\n    typo: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert "sft.nested.typo" in str(err.value) and "bad.yaml" in str(err.value)


def test_type_mismatch_names_key_and_expected_type():
    with pytest.raises(ConfigError) as err:
        load_config(DEFAULT_CONFIG, ["sft.steps=many"])
    assert "sft.steps" in str(err.value) and "int" in str(err.value)
    with pytest.raises(ConfigError, match=r"sft\.lr.*float"):
        load_config(DEFAULT_CONFIG, ["sft.lr=fast"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("sft.engine=jax", "sft.engine"),
        ("model.arch=gpt2", "model.arch"),
        ("sft.zero_stage=3", "sft.zero_stage"),
        ("sft.corrupt_fraction=1.5", "sft.corrupt_fraction"),
        ("sft.num_problems=-1", "sft.num_problems"),
        ("model.hidden_size=0", "model.hidden_size"),
        ("task.name=gsm8k", "task.data.path"),
        ("search.mcts.simulations=0", "search.mcts.simulations"),
        ("search.children=0", "search.children"),
        ("search.beam.width=0", "search.beam.width"),
        ("search.best_of_n.num_samples=0", "search.best_of_n.num_samples"),
        ("search.max_response_tokens=8", "search.max_response_tokens"),  # below one step (max_step_tokens 48)
        ("search.budgets=[4,0]", "search.budgets"),
        ("search.kind=dfs", "search.kind"),
        ("search.mcts.dirichlet_eps=1.5", "search.mcts.dirichlet_eps"),
        ("search.mcts.c_puct=-1", "search.mcts.c_puct"),
        ("search.mcts.simulations=many", "search.mcts.simulations"),
    ],
)
def test_semantic_checks_name_the_key(override: str, key: str):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(DEFAULT_CONFIG, [override])


def test_malformed_override_and_missing_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(DEFAULT_CONFIG, ["sft.steps"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_resolved_yaml_round_trips(tmp_path: Path):
    cfg = load_config(DEFAULT_CONFIG, ["sft.steps=11"])
    path = tmp_path / "resolved.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(path) == cfg


def test_the_defaults_are_the_default_recipe():
    """The schema's defaults are what `make run` trains, so a recipe names only what differs."""
    assert load_config(None) == load_config(DEFAULT_CONFIG)
    cfg = load_config(None)
    assert (cfg.train.steps, cfg.train.batch_size, cfg.train.lr, cfg.sft.num_problems) == (60, 512, 1e-4, 1000)


@pytest.mark.parametrize(
    "override, named",
    [
        ("search.kind=dfs", ["search.kind", "mcts", "best_of_n", "shepherd"]),
        ("train.mode=fast", ["train.mode", "async", "sync", "local"]),
        ("search.kinds=[mcts,dfs]", ["search.kinds", "greedy"]),
        ("buffer.sampler=lifo", ["buffer.sampler", "fifo", "prioritized"]),
    ],
)
def test_a_choice_outside_its_set_names_the_key_and_the_allowed_values(override: str, named: list[str]):
    with pytest.raises(ConfigError) as err:
        load_config(DEFAULT_CONFIG, [override])
    assert all(word in str(err.value) for word in named), str(err.value)


def test_choices_compare_and_print_as_their_values():
    cfg = load_config(DEFAULT_CONFIG, ["search.kind=beam"])
    assert cfg.search.kind == "beam" and f"{cfg.search.kind}" == "beam" and str(cfg.train.mode) == "async"


@pytest.mark.parametrize(
    "override, message",
    [
        ("search.mcts.dirichlet_eps=1.5", "'search.mcts.dirichlet_eps' must be <= 1"),
        ("train.lr=0", "'train.lr' must be > 0"),
        ("eval.ks=[1,0]", "'eval.ks' must be > 0"),
        ("resources.max_actor_restarts=-2", "'resources.max_actor_restarts' must be >= -1"),
        ("value.holdout_fraction=1", "'value.holdout_fraction' must be < 1"),
        ("train.lr=nan", "'train.lr' must be a finite number"),
        ("train.lr=inf", "'train.lr' must be a finite number"),
        ("search.temperature=-inf", "'search.temperature' must be a finite number"),
        ("train.steps=99999999999999999999", "'train.steps' must be at most 2^53"),
        ("run.name=../x", "'run.name' must be a plain directory name"),
        ("run.name=/tmp/x", "'run.name' must be a plain directory name"),
        ("run.name=a/b", "'run.name' must be a plain directory name"),
        (
            "train.batch_size=2000 buffer.capacity=4096 buffer.samples_per_insert=1",
            "'train.batch_size' (2000) exceeds what the buffer admits before the learner's first sample",
        ),
    ],
)
def test_bounds_come_from_the_schema_and_name_the_key(override: str, message: str):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(DEFAULT_CONFIG, override.split())


def test_a_moved_key_says_where_it_went(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"unknown config key 'search\.simulations' \(it is now 'search\.mcts"):
        load_config(DEFAULT_CONFIG, ["search.simulations=4"])
    old = tmp_path / "old.yaml"
    old.write_text("train:\n  buffer_capacity: 100\n")
    with pytest.raises(ConfigError, match=r"old\.yaml.*train\.buffer_capacity.*'buffer\.capacity'"):
        load_config(old)


def test_search_config_defaults_load():
    cfg = load_config(DEFAULT_CONFIG, ["search.kind=beam", "search.beam.width=8", "search.children=2"])
    assert cfg.search.kind == "beam" and cfg.search.beam.width == 8


def test_a_policy_coefficient_of_zero_needs_something_else_to_train_the_policy():
    assert load_config(None, ["train.policy_coef=0"]).train.policy_coef == 0  # the recipe imitates its archive
    with pytest.raises(ConfigError, match="train.policy_coef.*nothing trains the policy"):
        load_config(None, ["train.policy_coef=0", "train.journey.mode=off", "buffer.solution_replay=0"])


def test_a_retry_budget_is_an_mcts_budget():
    cfg = load_config(None, ["train.retry_simulations=48", "train.skip_solved=true"])
    assert cfg.train.retry_simulations == 48 and cfg.train.skip_solved
    with pytest.raises(ConfigError, match="train.retry_simulations.*search.kind is beam"):
        load_config(None, ["train.retry_simulations=48", "search.kind=beam"])


def test_off_is_a_choice_word_not_a_yaml_false(tmp_path):
    # YAML 1.1 reads `off` as false; a choice key with an `off` value means that value, in overrides and recipes
    cfg = load_config(None, ["train.journey.mode=off", "buffer.solution_replay=0"])
    assert str(cfg.train.journey.mode) == "off"
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  journey:\n    mode: off\nbuffer:\n  solution_replay: 0\n")
    assert str(load_config(str(recipe)).train.journey.mode) == "off"
    with pytest.raises(ConfigError, match="buffer.solution_replay=0"):  # the archive needs imitated responses
        load_config(None, ["train.journey.mode=off"])
    with pytest.raises(ConfigError, match="train.value_trunk_grad"):  # a bool key stays a bool
        load_config(None, ["train.value_trunk_grad=sometimes"])
