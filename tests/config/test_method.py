"""The one preset system: every method preset parses to a validated MethodConfig, by name and by path alike;
configs/PAPERS.md matches the presets; bad method configs list all their problems at once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tokenfocus.config import ConfigError, MethodConfig, method_preset, method_presets, resolve_method
from tokenfocus.config.method import METHODS_DIR
from tokenfocus.losses import LOSS_PRESETS, loss_preset
from tokenfocus.policies import POLICIES

PAPERS = Path(__file__).parents[2] / "configs" / "PAPERS.md"


def papers_table(path: Path = PAPERS) -> list[dict]:
    """Rows of the paper -> preset table: {paper, arxiv, presets (the backticked names)}."""
    rows = []
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"\d{4}\.\d{5}|—|-|", cells[1]) and cells[0] not in ("paper", ""):
            rows.append({"paper": cells[0], "arxiv": cells[1], "presets": re.findall(r"`([^`]+)`", cells[2])})
    return rows


def test_there_are_paper_presets():
    assert len(method_presets()) >= 14
    assert {"dapo", "grpo", "8020", "random20", "anchors20", "explorers20", "low2high", "pgpo", "video_ktr",
            "d3s"} <= set(method_presets())


@pytest.mark.parametrize("name", method_presets())
def test_a_preset_is_the_same_object_by_name_and_by_path(name):
    by_name = resolve_method(name)
    by_path = resolve_method(str(METHODS_DIR / f"{name}.yaml"))
    assert by_name == by_path
    assert by_name is method_preset(name)  # parsed once
    assert by_name.policy.name in POLICIES
    if by_name.signals:
        assert {s.label for s in by_name.signals} >= _read(by_name)


def _read(method: MethodConfig) -> set[str]:
    from tokenfocus.config.method import read_signals

    return read_signals(method.policy)


def check_papers_md(path: Path) -> None:
    rows = papers_table(path)
    listed = {name: row for row in rows for name in row["presets"]}
    assert set(listed) == set(method_presets()), (sorted(set(method_presets()) - set(listed)),
                                                  sorted(set(listed) - set(method_presets())))
    for name, row in listed.items():
        preset = method_preset(name)
        assert preset.arxiv == (row["arxiv"] if re.fullmatch(r"\d{4}\.\d{5}", row["arxiv"]) else ""), name


def test_papers_md_lists_every_preset_with_its_arxiv_id():
    check_papers_md(PAPERS)


@pytest.mark.parametrize("change", [("`anchors20`", "`anchors20x`"), ("| 2503.14476 |", "| 2503.14477 |")])
def test_papers_md_check_fails_on_a_wrong_table(tmp_path, change):
    """The check above can fail: a misspelt preset or a wrong arXiv id is caught."""
    fake = tmp_path / "PAPERS.md"
    fake.write_text(PAPERS.read_text().replace(*change))
    with pytest.raises(AssertionError):
        check_papers_md(fake)


def test_presets_reproduce_the_flagship_subsets_and_losses():
    anchors = method_preset("anchors20")
    assert (anchors.policy.name, anchors.policy.options["side"], anchors.policy.options["ratio"]) == ("quantile", "low", 0.2)
    assert anchors.loss == loss_preset("dapo", normalizer="selected")
    assert method_preset("low2high").loss == LOSS_PRESETS["dapo"]
    assert method_preset("8020").policy.options == {"signal": "predictive_entropy", "ratio": 0.2, "side": "high",
                                                    "scope": "batch"}


def test_a_policy_reading_an_uncomputed_signal_is_refused():
    with pytest.raises(ConfigError, match=r"reads signal\(s\) \['attention_entropy'\].*add them to signals"):
        MethodConfig.from_dict({"policy": {"name": "quantile", "signal": "attention_entropy"}})
    with pytest.raises(ConfigError, match=r"reads signal\(s\) \['predictive_entropy'\]"):
        MethodConfig.from_dict({"signals": ["attention_entropy"], "policy": {
            "name": "union", "policies": [{"name": "quantile", "signal": "predictive_entropy"}]}})


def test_bad_config_lists_every_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "signals: [attention_entropi]\n"
        "policy: {name: quantile, rate: 0.2}\n"
        "loss: {preset: dapo, norm: mean, epsilon: 0.2}\n"
        "optimiser: adam\n"
    )
    with pytest.raises(ConfigError) as error:
        MethodConfig.from_yaml(bad)
    message = str(error.value)
    for expected in ("unknown key(s) ['optimiser']", "Unknown signal 'attention_entropi'", "unknown option(s) ['rate']",
                     "loss: unknown key 'epsilon'"):
        assert expected in message, message


def test_a_bad_option_value_is_refused_when_parsed():
    with pytest.raises(ConfigError, match=r"side='top' is not one of \('low', 'high', 'middle'\)"):
        MethodConfig.from_dict({"signals": ["attention_entropy"], "policy": {"name": "quantile", "side": "top"}})


def test_unknown_preset_names_the_presets():
    with pytest.raises(ConfigError, match="'anchor20' is neither a preset .*anchors20"):
        resolve_method("anchor20")


def test_duplicate_yaml_keys_are_refused(tmp_path):
    dup = tmp_path / "dup.yaml"
    dup.write_text("policy: {name: full}\npolicy: {name: random}\n")
    with pytest.raises(ConfigError, match="duplicate key 'policy' at line 2"):
        MethodConfig.from_yaml(dup)


def test_out_of_range_loss_values(tmp_path):
    bad = tmp_path / "range.yaml"
    bad.write_text("loss: {preset: dapo, epsilon_low: 1.5, beta: -1}\n")
    with pytest.raises(ConfigError, match="epsilon_low.*beta and entropy_coef must be >= 0"):
        MethodConfig.from_yaml(bad)


def test_the_dry_run_is_generic_over_registered_policies(monkeypatch):
    """A policy's own run-time check becomes a config problem with no code in config/: a policy registered
    here refuses threshold > 1 when it runs, and MethodConfig lists that, at progress 0, before any model."""
    from tokenfocus.policies.registry import PolicyInfo
    from tokenfocus.types import PolicyOutput

    def picky(inputs, threshold: float = 0.5):
        """Refuses a threshold above 1 when it runs."""
        if threshold > 1:
            raise ValueError(f"threshold must be <= 1, got {threshold}")
        return PolicyOutput(inputs.mask.float())

    monkeypatch.setitem(POLICIES.entries, "picky", PolicyInfo("picky", picky, "test"))
    assert MethodConfig.from_dict({"policy": {"name": "picky", "threshold": "1e-1"}}).policy.options == {"threshold": 0.1}
    with pytest.raises(ConfigError, match=r"policy: 'picky' .* fails when it runs .*threshold must be <= 1, got 2.0"):
        MethodConfig.from_dict({"policy": {"name": "picky", "threshold": 2.0}})


def test_the_dry_run_sees_every_progress_and_the_synthetic_inputs_are_legal():
    from tokenfocus.config.dry_run import PROGRESS, synthetic_inputs

    inputs = synthetic_inputs({"a", "b"}, 1.0)
    assert PROGRESS == (0.0, 0.5, 1.0) and not inputs.mask[-1].any() and inputs.mask[0].all()
    assert set(inputs.signals) == {"a", "b"} and (inputs.signals["a"][~inputs.mask] == 0).all()
    assert inputs.group_ids.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_registered_policy_passes_the_dry_run_with_its_defaults(name):
    """No false alarms: each policy with default options (and the signals it reads) is accepted."""
    from tokenfocus.config.dry_run import dry_run_policy
    from tokenfocus.policies import parse_policy_spec

    spec = {"name": name}
    if name in ("product", "union", "intersection"):
        spec["policies"] = [{"name": "random"}, {"name": "full"}]
    policy = parse_policy_spec(spec)
    labels = _read_policy(policy) | {"predictive_entropy", "attention_entropy", "context_dependency"}
    assert dry_run_policy(policy, labels) == []


def _read_policy(policy):
    from tokenfocus.config.method import read_signals

    return read_signals(policy)
