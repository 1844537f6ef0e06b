"""Config fuzzing: a valid tiny train config, mutated at random in every section (random keys; strings, numbers,
numeric strings, negatives, lists, nested mappings, None; whole sections replaced; raw text that is not YAML),
must end in a TrainConfig or a ConfigError that lists problems -- never any other exception. A config that
validates must also construct its GRPOConfig and carry numbers (not strings) in its numeric TRL fields."""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenfocus.config import ConfigError, TrainConfig, load_train_config

pytestmark = pytest.mark.filterwarnings("ignore")

TINY = "tiny-llama:layers=2,hidden=32,heads=4,kv_heads=2"
VALID = {
    "model": TINY,
    "task": {"name": "arithmetic", "tiers": ["D1", "D2"], "n_train": 16, "seed": 0},
    "method": {"signals": [{"name": "attention_entropy", "layers": "middle"}, "predictive_entropy"],
               "policy": {"name": "low2high", "signal": "attention_entropy", "kappa0": 0.5, "w_min": 0.5},
               "loss": {"preset": "dapo", "normalizer": "all"}},
    "signal_source": "rollout",
    "signal_pass": "auto",
    "reward": {"kind": "digits", "timeout_s": 5.0},
    "trl": {"max_steps": 2, "num_generations": 4, "per_device_train_batch_size": 4, "learning_rate": 1e-5,
            "temperature": 1.0, "max_completion_length": 8},
    "run": {"dir": "RUN_DIR", "seed": 0, "save_steps": 1},
    "diagnostics": {"every": 2, "ratio": 0.2, "project_dim": 64},
}
# (path to a mapping, known keys there): where mutations land, and the keys they are most likely to hit.
PLACES = {
    (): list(VALID),
    ("task",): ["name", "tiers", "n_train", "seed", "path"],
    ("method",): ["signals", "policy", "loss", "paper"],
    ("method", "policy"): ["name", "signal", "kappa0", "schedule", "w_min", "w_max", "ratio", "scope", "form", "alpha",
                           "transform_kind", "policies", "seed"],
    ("method", "loss"): ["preset", "normalizer", "epsilon_low", "epsilon_high", "beta", "norm", "dual_clip"],
    ("reward",): ["kind", "timeout_s", "format_bonus", "answer_line_only"],
    ("trl",): ["max_steps", "num_generations", "per_device_train_batch_size", "learning_rate", "temperature",
               "max_completion_length", "gradient_accumulation_steps", "top_p", "top_k", "num_iterations",
               "steps_per_generation", "generation_batch_size", "logging_steps", "warmup_steps", "weight_decay",
               "lr_scheduler_type", "scale_rewards", "report_to", "bf16", "output_dir", "loss_type", "max_step"],
    ("run",): ["dir", "seed", "save_steps", "save_total_limit"],
    ("diagnostics",): ["every", "start", "ratio", "layers", "project_dim", "bootstrap", "min_groups"],
}
POLICY_NAMES = ["full", "random", "quantile", "low2high", "pgpo", "d3s", "d3s_samples", "d3s_tokens", "video_ktr",
                "union", "product", "position_matched", "front", "back", "nope"]

numeric_strings = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(lambda x: f"{x:.3e}"),
    st.integers(-100, 100).map(str), st.sampled_from(["1e-5", "-1e-3", "1e3", "0", ".5", "2.", "1e999", "nan", "inf"]))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10), st.integers(-2**70, 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(-2, 2), numeric_strings,
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12),
    st.sampled_from(["middle", "all", "low", "high", "dapo", "grpo", "attention_entropy", "predictive_entropy",
                     "batch", "group", "linear", "e", "D1", "nonexistent/model", "tiny-llama:layers=0", "", "~"]),
    st.sampled_from(POLICY_NAMES))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.one_of(st.text(max_size=6), st.sampled_from(POLICY_NAMES[:4])),
                                                 inner, max_size=3),
    st.fixed_dictionaries({"name": st.sampled_from(POLICY_NAMES)}, optional={"ratio": inner, "signal": inner})),
    max_leaves=6)


@st.composite
def mutation(draw):
    place = draw(st.sampled_from(sorted(PLACES)))
    key = draw(st.one_of(st.sampled_from(PLACES[place]), st.text(max_size=8), st.integers(-3, 3)))
    action = draw(st.sampled_from(["set", "set", "set", "delete", "replace"]))
    return place, key, action, draw(values)


def apply(config: dict, place, key, action, value) -> dict:
    target = config
    for part in place:
        if not isinstance(target.get(part), dict):
            return config  # an earlier mutation replaced this mapping
        target = target[part]
    if action == "replace" and place:
        parent = config
        for part in place[:-1]:
            parent = parent[part]
        parent[place[-1]] = value
    elif action == "delete":
        target.pop(key, None)
    else:
        target[key] = value
    return config


TRIED = {"configs": 0, "valid": 0, "refused": 0}


# ~250 configs take ~20 s here (~60 s on a slow 2-core CPU); TOKENFOCUS_FUZZ_EXAMPLES=5000 for a long search.
EXAMPLES = int(os.environ.get("TOKENFOCUS_FUZZ_EXAMPLES", "250"))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(mutations=st.lists(mutation(), min_size=1, max_size=4), garbage=st.one_of(st.none(), st.none(), st.none(), st.text(max_size=40)))
def test_mutated_configs_validate_or_list_their_problems(tmp_path_factory, mutations, garbage):
    folder = tmp_path_factory.mktemp("fuzz")
    config = copy.deepcopy(VALID)
    config["run"]["dir"] = str(folder / "run")
    for change in mutations:
        config = apply(config, *change)
    path = folder / "c.yaml"
    text = yaml.safe_dump(config, allow_unicode=True)
    path.write_text(garbage if garbage is not None and len(mutations) == 1 else text, encoding="utf-8")
    TRIED["configs"] += 1
    try:
        result = load_train_config(path)
    except ConfigError as error:
        TRIED["refused"] += 1
        message = str(error)
        assert str(path) in message or "\n  - " in message, message  # names the file, lists the problems
        assert message.strip() and "Traceback" not in message
        return
    TRIED["valid"] += 1
    assert isinstance(result, TrainConfig)
    check_valid(result)


def check_valid(config: TrainConfig) -> None:
    """What a validated config promises the trainer: GRPOConfig constructs, numbers are numbers, the run dir is
    creatable, the policy runs on synthetic inputs."""
    from trl import GRPOConfig

    from tokenfocus.config.dry_run import synthetic_inputs
    from tokenfocus.policies import apply_policy

    args = GRPOConfig(**config.trl_args())
    assert isinstance(args.learning_rate, float) and math.isfinite(args.learning_rate) and args.learning_rate >= 0
    assert args.temperature > 0 and args.max_steps >= 1 and args.num_generations >= 2
    assert isinstance(config.run.dir, str) and not Path(config.run.dir).is_file()
    labels = {s.label for s in config.method.signals}
    apply_policy(config.method.policy, synthetic_inputs(labels, 0.5))


def test_zz_report_fuzz_count():
    """Runs after the fuzz test (file order): prints how many configs it tried."""
    print(f"\nconfig fuzz: {TRIED['configs']} configs tried, {TRIED['valid']} valid, {TRIED['refused']} refused")
    assert TRIED["configs"] == 0 or TRIED["configs"] >= min(EXAMPLES, 100)
