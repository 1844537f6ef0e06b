"""`tokenfocus prune` end to end on a tiny model: every method beside random at each budget and layer, the
information map, the token view, the claims, and the page in headless Chromium; bad configs are refused before the
model loads."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from tokenfocus.config import ConfigError
from tokenfocus.config.prune import load_prune_config
from tokenfocus.recipes.prune import run_prune

TINY = "tiny-llama:layers=4,hidden=32,heads=4,kv_heads=2"


def write(tmp_path, **data):
    path = tmp_path / "prune.yml"
    base = {"model": TINY, "testbed": {"name": "facts", "n": 3, "distractors": 20, "seed": 1},
            "budgets": [0.25, 0.5], "layers": [1, 3], "random_draws": 2,
            "progressive": {"accumulate": [0, 1], "prune_layers": [1, 2], "ratios": [0.75, 0.25]},
            "horizon": {"layers": [0, 1, 2, 3], "window": 32, "n": 2}, "ttv_window": 2, "sads": {"m": 8},
            "relevance": {"calibration": 4, "steps": 30}, "show": 1, "dir": str(tmp_path / "out")}
    path.write_text(yaml.safe_dump({**base, **data}))
    return path


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("prune")
    out = run_prune(load_prune_config(write(tmp_path)), log=lambda m: None)
    return tmp_path, out


def test_every_method_runs_beside_random_at_each_budget_and_layer(sweep):
    _, out = sweep
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    seen = {(r["method"], r["layer"], r["budget"]) for r in rows}
    for method in ("random", "attention", "ttv", "transprune", "divprune", "sads", "relevance", "predicted"):
        for layer in (1, 3):
            for budget in (0.25, 0.5):
                assert (method, layer, budget) in seen, (method, layer, budget)
    assert ("progressive", "progressive", 0.25) in seen and ("random", "progressive", 0.25) in seen
    lens = [r for r in rows if r["method"] == "embedlens"]
    assert {r["layer"] for r in lens} == {1, 3}
    for row in lens:  # random runs at the budget embedlens left
        assert ("random", row["layer"], row["budget"]) in seen
    random_rows = [r for r in rows if r["method"] == "random" and r["layer"] == 1 and r["budget"] == 0.25]
    assert len(random_rows) == 3 * 2  # examples x draws
    kept = {r["kept_context"] for r in rows if r["method"] in ("attention", "sads") and r["budget"] == 0.25}
    context = {r["kept_context"] for r in rows if r["method"] == "random" and r["budget"] == 0.5}
    assert len(kept) >= 1 and all(k < max(context) for k in kept)
    assert all(0 < r["flops"] < 1 for r in rows) and all(0.0 <= r["evidence"] <= 1.0 for r in rows)


def test_the_summary_pairs_each_method_with_random_and_judges_the_claims(sweep):
    _, out = sweep
    summary = json.loads((out / "summary.json").read_text())
    row = next(r for r in summary["table"] if r["method"] == "sads" and r["layer"] == 1 and r["budget"] == 0.25)
    assert row["examples"] == 3 and row["vs_random"]["n"] == 3 and row["vs_random"]["low"] <= row["vs_random"]["high"]
    assert [c["verdict"] in ("reproduced", "not reproduced", "inconclusive") for c in summary["claims"]] == [True] * 6
    predictor_claim = summary["claims"][4]
    assert "relevance predictor" in predictor_claim["claim"] and "not tested" not in predictor_claim["evidence"]
    assert summary["examples"] == 3 and 0.0 <= summary["unpruned_exact"] <= 1.0
    assert "unpruned exact match" in (out / "prune.html").read_text()
    fitted = summary["testbed_info"]["predictor"]
    assert fitted["examples"] == 4 and fitted["loss_after"] < fitted["loss_before"]
    assert "ZOO-Prune: SADS beats DivPrune" in summary["claims"][2]["claim"]
    info = json.loads((out / "information.json").read_text())
    assert info["layers"] == [0, 1, 2, 3] and info["examples"] == 2 and len(info["mean"]) == 4
    views = json.loads((out / "views.json").read_text())["examples"]
    assert len(views) == 1 and "sads|1|0.25" in views[0]["kept"] and len(views[0]["tokens"]) == len(views[0]["roles"])


def test_the_page_renders_in_headless_chromium(sweep):
    import shutil

    tmp_path, out = sweep
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is needed for the page test: apt-get install -y chromium (make test does)"
    page = out / "prune.html"
    text = page.read_text()
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "<script" not in text
    run = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120, check=False)
    dom = run.stdout
    assert "<table id=\"claims\">" in dom and dom.count("<figure") >= 3
    assert re.search(r"<table id=\"layer-1\">", dom) and "class=\"toks\"" in dom and "class=\"drop" in dom
    assert "Horizon" in dom


def test_bad_configs_are_refused_before_the_model_loads(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_prune_config(write(tmp_path, budgets=[0, 1.5], layers=[-1], methods=["random", "fastv"],
                                testbed={"name": "images"}))
    message = str(error.value)
    for expected in ("budgets: [0, 1.5]", "layers: [-1]", "methods: ['fastv']", "testbed.name: 'images'"):
        assert expected in message, (expected, message)
    with pytest.raises(ValueError, match=r"layers: \[9\] are beyond the model's layers 0..3"):
        run_prune(load_prune_config(write(tmp_path, layers=[9])), log=lambda m: None)
    out = run_prune(load_prune_config(write(tmp_path, methods=["random"], horizon=None, layers=[1], budgets=[0.5],
                                            testbed={"name": "facts", "n": 2})), log=lambda m: None)
    with pytest.raises(ValueError, match="already holds a prune sweep"):
        run_prune(load_prune_config(write(tmp_path, methods=["random"])), log=lambda m: None)
    assert (out / "prune.html").is_file()


def test_the_digits_testbed_prunes_image_tokens_and_judges_the_alive_share(tmp_path):
    """The mini-VLM path on a tiny LM with an untrained projector saved as if accepted: image tokens are the
    context, ZOO-Prune perturbs the 4-d patches through the projector, the page draws the 4 x 4 grid, and the
    EmbedLens claim reads the alive share at layer 0."""
    from tokenfocus.models import load_model
    from tokenfocus.prune.digits import Projector, save_projector

    model, _ = load_model(TINY)
    fixture = save_projector(Projector(model.config.hidden_size), {"test_accuracy": 0.81}, tmp_path / "proj.pt")
    path = write(tmp_path, testbed={"name": "digits", "n": 3, "seed": 0, "projector": str(fixture)},
                 methods=["random", "sads", "divprune", "embedlens", "predicted"], layers=[0, 2], budgets=[0.25],
                 horizon={"layers": [0, 2], "window": 4, "n": 2}, lens={"share": 0.2, "k": 3})
    out = run_prune(load_prune_config(path), log=lambda m: None)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["kept_context"] for r in rows if r["method"] == "sads"} == {4}  # 0.25 of the 16 image tokens
    lens = [r for r in rows if r["method"] == "embedlens"]
    assert lens and all(r["budget"] == "lens" and 0 < r["kept_share"] <= 1 for r in lens)
    for r in lens:  # the alive share is the lens' own count; kept_share is random's budget (at least one token)
        assert r["alive_share"] == r["kept_context"] / 16 and r["kept_share"] == max(1, r["kept_context"]) / 16
    summary = json.loads((out / "summary.json").read_text())
    alive = summary["claims"][-1]
    assert alive["claim"].startswith("EmbedLens") and "alive share of the 16 image tokens at the LM input, 3 images" \
        in alive["evidence"]
    attractors = summary["testbed_info"]["attractors"]
    assert set(attractors) == {"0", "2"} and attractors["0"] and all(0.2 < a["nearest_share"] <= 1 and isinstance(a["token"], str)
                                                 for found in attractors.values() for a in found)
    info = json.loads((out / "information.json").read_text())
    assert len(info["mean"][0]) == 4  # 16 image tokens in windows of 4
    page = (out / "prune.html").read_text()
    assert "class='grid'" in page and "lens (" in page and "projector held-out accuracy 0.810" in page
    assert "EmbedLens attractors" in page
    with pytest.raises(ConfigError, match="no trained digits projector"):
        load_prune_config(write(tmp_path, testbed={"name": "digits", "n": 3, "projector": str(tmp_path / "no.pt")}))


def test_the_shipped_prune_configs_are_valid():
    from pathlib import Path

    configs = sorted((Path(__file__).parents[2] / "configs" / "prune").glob("*.yaml"))
    assert len(configs) >= 2
    for path in configs:
        config = load_prune_config(path)
        assert config.methods and config.testbed["name"] in ("facts", "gsm8k", "digits"), path
        assert not config.layer_problems(30), path  # SmolLM2-135M has 30 layers


class Killed(Exception):
    """Stands in for a kill right after an example's line is written (raised from the progress log)."""


def test_a_killed_sweep_resumes_to_the_rows_of_an_uninterrupted_one(tmp_path):
    """Killed after example 2 of 4 (and again with a torn line at the end of partial.jsonl), started again with the
    same config, the sweep skips the finished examples and writes the same rows, views and summary as a sweep that
    ran through; random draws continue from the saved generator state. A changed config is refused there."""
    spec = {"methods": ["random", "sads", "divprune", "embedlens", "progressive"], "layers": [1, 3], "budgets": [0.5],
            "testbed": {"name": "facts", "n": 4, "distractors": 6, "seed": 2}, "show": 3}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    whole = run_prune(load_prune_config(write(tmp_path / "a", **spec)), log=lambda m: None)
    config = load_prune_config(write(tmp_path / "b", **spec))

    def kill_after(count):
        def log(message):
            if message.startswith(f"[prune] example {count}/"):
                raise Killed
        return log

    with pytest.raises(Killed):
        run_prune(config, log=kill_after(2))
    partial = config.run_dir / "partial.jsonl"
    assert len(partial.read_text().splitlines()) == 2 and not (config.run_dir / "results.jsonl").exists()
    with partial.open("a") as handle:
        handle.write('{"example": 2, "rows": [{"meth')  # a kill in the middle of the next line
    with pytest.raises(ValueError, match="unfinished sweep of another config .*budgets.*--overwrite"):
        run_prune(load_prune_config(write(tmp_path / "b", **{**spec, "budgets": [0.25]})), log=lambda m: None)
    messages = []
    with pytest.raises(Killed):
        run_prune(config, log=lambda m: (messages.append(m), kill_after(3)(m)))
    assert messages[0] == f"[prune] resuming: 2 of 4 examples done in {partial}"
    assert list(config.run_dir.glob("partial.jsonl.torn-*"))  # the torn line was set aside, not parsed
    messages.clear()
    resumed = run_prune(config, log=messages.append)
    assert messages[0].startswith("[prune] resuming: 3 of 4") and not partial.exists()
    assert [m.split(":")[0] for m in messages if m.startswith("[prune] example")] == ["[prune] example 4/4"]
    for name in ("results.jsonl", "views.json"):
        assert (resumed / name).read_text() == (whole / name).read_text(), name
    assert json.loads((resumed / "summary.json").read_text()) == json.loads((whole / "summary.json").read_text())
    with pytest.raises(ValueError, match="already holds a prune sweep"):
        run_prune(config, log=lambda m: None)


def test_rejudge_writes_the_same_summary_and_page_from_the_files_alone(sweep, tmp_path):
    """`tokenfocus prune DIR --rejudge`: the summary and page again from results.jsonl, information.json and
    prune.yaml (after the claims' code changed), keeping testbed_info; a dir without a sweep is refused."""
    import shutil

    from typer.testing import CliRunner

    from tokenfocus.cli import app

    _, out = sweep
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "prune.html").unlink()
    summary = json.loads((copy / "summary.json").read_text())
    (copy / "summary.json").write_text(json.dumps({"testbed_info": summary["testbed_info"]}))
    result = CliRunner().invoke(app, ["prune", str(copy), "--rejudge"])
    assert result.exit_code == 0, result.output
    assert json.loads((copy / "summary.json").read_text()) == summary and (copy / "prune.html").is_file()
    refused = CliRunner().invoke(app, ["prune", str(tmp_path / "nothing"), "--rejudge"])
    assert refused.exit_code != 0 and "holds no finished prune sweep" in refused.output


def test_a_sweep_killed_with_sigkill_resumes_through_the_cli(tmp_path):
    """A real kill -9 of `tokenfocus prune` once two examples are on disk; the same command then finishes the sweep
    with the rows of an uninterrupted one (written in-process here)."""
    import os
    import signal
    import sys
    import time

    spec = {"methods": ["random", "divprune"], "layers": [1], "budgets": [0.5], "horizon": None,
            "testbed": {"name": "facts", "n": 12, "distractors": 12, "seed": 4}, "random_draws": 3}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    whole = run_prune(load_prune_config(write(tmp_path / "a", **spec)), log=lambda m: None)
    config_path = write(tmp_path / "b", **spec)
    out = load_prune_config(config_path).run_dir
    command = [sys.executable, "-m", "tokenfocus.cli", "prune", str(config_path)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = out / "partial.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if partial.is_file() and len(partial.read_bytes().splitlines()) >= 2:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    assert process.wait() == -signal.SIGKILL, "the sweep ended before it could be killed"
    assert not (out / "results.jsonl").exists()
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "[prune] resuming:" in finished.stderr
    assert (out / "results.jsonl").read_text() == (whole / "results.jsonl").read_text()
