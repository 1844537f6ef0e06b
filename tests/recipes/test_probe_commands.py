"""`tokenfocus probe sinks | function-tokens | concepts | ngram-heads | block-attention` end to end on a tiny
model, one output directory, one page checked in headless Chromium; bad input refused before any model loads."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from tokenfocus.cli import app
from tokenfocus.signals.function_token import FunctionPartition

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def invoke(*args):
    return CliRunner().invoke(app, ["probe", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    out = tmp_path_factory.mktemp("probes") / "probes"
    common = ["--model", "tiny-llama", "--out", str(out)]
    result = invoke("sinks", "--n", "3", "--max-tokens", "40", "--min-queries", "2", "--sink-threshold", "0.05",
                    *common)
    assert result.exit_code == 0, result.output
    result = invoke("function-tokens", "--n", "60", "--n-eval", "6", "--alphas", "0,4", *common)
    assert result.exit_code == 0, result.output
    result = invoke("block-attention", "--n-eval", "2", "--distill-steps", "1", "--distill-train", "2", *common)
    assert result.exit_code == 0, result.output
    result = invoke("ngram-heads", "--periods", "20,12", "--n-dfa", "2", "--dfa-length", "40", "--train-seconds", "2",
                    *common)
    assert result.exit_code == 0, result.output
    return out


def test_each_command_writes_its_file(out):
    sinks = json.loads((out / "sinks.json").read_text())
    assert sinks["n_texts"] == 3 and len(sinks["first_token_score"]) == len(sinks["layers"]) == 2
    assert all(0 <= v <= 1 for v in sinks["first_token_score"] + sinks["nonfirst_score"])
    heat = sinks["example"]["heatmap"]
    assert len(heat["sink_score"]) == 2 and len(heat["sink_score"][0]) == len(heat["tokens"]) <= 40
    assert sinks["intermediate"]["count"] == sum(r["count"] for r in sinks["intermediate"]["by_token"]) or \
        len(sinks["intermediate"]["by_token"]) == 20
    function = json.loads((out / "function_tokens.json").read_text())
    part = FunctionPartition.from_json(function["partition"])  # the signal's partition file format
    assert part.coverage >= 0.4 and len(part.ids) == len(function["partition"]["tokens"])
    dec = function["decomposition"]
    assert set(dec["mean"]) == {"F->F", "F->C", "C->F", "C->C"} and sum(dec["share"].values()) == pytest.approx(1, abs=1e-3)
    steer = function["steering"]
    assert steer["mean_shift"]["function"]["0.0"] == 0 and steer["mean_shift"]["content"]["0.0"] == 0
    assert function["steering_function_minus_content"]["4.0"]["n"] == len(steer["positions"]["function"]) > 0
    block = json.loads((out / "block_attention.json").read_text())
    assert block["n_eval"] == 2 and block["block_means"]["first"] == 0 and block["block_means"]["global"] == 0
    assert block["block_counts"]["query"] > 0 and block["block_counts"]["context"] > 0
    assert set(block["distill"]) == {"kl", "uniform"} and len(block["distill"]["kl"]["losses"]) == 1
    ngram = json.loads((out / "ngram_heads.json").read_text())
    probed, tiny = ngram["models"]["probed"], ngram["models"]["tiny"]
    assert set(probed["best"]) == {"period 20", "period 12", "dfa"} and tiny["training"]["seconds"] < 30
    for grid in ngram["grids"].values():  # layer x head masses of a 2-layer, 4-head model, within [0, 1]
        assert len(grid["mass"]) == 2 and len(grid["mass"][0]) == 4
        assert all(0 <= v <= 1 + 1e-6 for row in grid["mass"] for v in row) and 0 < grid["baseline"] < 1


def test_concepts_on_a_tokenizer_without_single_token_words_says_why(tmp_path):
    """tiny-llama's tokenizer has no word tokens: every concept is skipped, and the command says so."""
    result = invoke("concepts", "--model", "tiny-llama", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "no concept has >= 5 single-token pairs" in result.output


def test_one_page_in_a_headless_browser(out, tmp_path):
    assert CHROMIUM, "Debian's chromium is needed for the page test: apt-get install -y chromium (make test does)"
    page = out / "probes.html"
    text = page.read_text()
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "<script" not in text
    run = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
                          "--v=0", "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
                         check=False)
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    dom = run.stdout
    for section in ("sinks", "function-tokens", "block-attention", "ngram-heads"):
        assert f'id="{section}"' in dom
    figures = re.findall(r"<figure>(.*?)</figure>", dom, re.DOTALL)
    assert len(figures) >= 4
    for figure in figures:  # every figure's title sits above its picture
        assert figure.index("<figcaption>") < min(i for i in (figure.find("<svg"), figure.find("<table"))
                                                 if i >= 0)
    heatmap = figures[0]
    assert heatmap.count("<rect") == 2 * len(json.loads((out / "sinks.json").read_text())["example"]["heatmap"]
                                             ["tokens"])  # layer x key cells


def test_bad_input_fails_before_any_model_loads(tmp_path, monkeypatch):
    import tokenfocus.cli_probe as cli_probe

    monkeypatch.setattr(cli_probe, "_load", lambda spec: pytest.fail("a model was loaded"))
    torn = tmp_path / "rows.jsonl"
    torn.write_text('{"question": "a"}\n{"question": \n[1, 2]\n')
    one_sentence = tmp_path / "one.txt"
    one_sentence.write_text("How many apples are there?\n")
    cases = [
        (["sinks", "--texts", str(tmp_path / "missing.txt")], "not found"),
        (["sinks", "--texts", str(torn)], "lines [2, 3]"),
        (["sinks", "--sink-threshold", "0"], "--sink-threshold"),
        (["function-tokens", "--alphas", "2,x"], "comma-separated floats"),
        (["ngram-heads", "--periods", "32"], "two or more different block lengths"),
        (["ngram-heads", "--periods", "a,b"], "comma-separated ints"),
        (["function-tokens", "--n", "10", "--n-eval", "10"], "texts of its own"),
        (["concepts", "--vectors", "rows"], "choose unembedding or hidden"),
        (["concepts", "--vectors", "hidden", "--space", "causal"], "use --vectors unembedding"),
        (["block-attention", "--segmenter", "words"], "choose sentence, paragraph or similarity"),
        (["block-attention", "--texts", str(one_sentence)], "at least two sentences"),
    ]
    for args, message in cases:
        result = invoke(*args, "--out", str(tmp_path / "o"))
        assert result.exit_code == 2 and message in result.output, (args, result.output)


def test_an_output_is_never_replaced_silently(out, monkeypatch):
    import tokenfocus.cli_probe as cli_probe

    monkeypatch.setattr(cli_probe, "_load", lambda spec: pytest.fail("a model was loaded"))
    before = (out / "sinks.json").read_text()
    result = invoke("sinks", "--out", str(out))
    assert result.exit_code == 2 and "already holds sinks.json; pass --overwrite" in result.output
    assert (out / "sinks.json").read_text() == before
    run_dir = out.parent / "a-run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("x: 1\n")
    result = invoke("concepts", "--out", str(run_dir))
    assert result.exit_code == 2 and "holds a training run or study" in result.output


def test_a_torn_file_beside_the_output_is_named_and_the_new_file_kept(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "concepts.json").write_text('{"model": "tiny-llama", "names": ["a')
    result = invoke("sinks", "--model", "tiny-llama", "--n", "2", "--max-tokens", "16", "--out", str(out))
    assert result.exit_code == 2 and "concepts.json is not a complete JSON file" in result.output
    assert json.loads((out / "sinks.json").read_text())["n_texts"] == 2


def test_the_decorrelation_fine_tune_runs_both_arms_on_a_tiny_model(tmp_path):
    result = invoke("sinks", "--model", "tiny-llama", "--n", "2", "--max-tokens", "24", "--finetune-steps", "2",
                    "--batch-size", "2", "--decorrelation", "100", "--min-queries", "2", "--out", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    finetune = json.loads((tmp_path / "o" / "sinks.json").read_text())["finetune"]
    assert finetune["lambda_0"]["term"] == [] and len(finetune["lambda"]["term"]) == 2
    for arm in ("before", "lambda_0", "lambda"):
        numbers = finetune[arm] if arm == "before" else finetune[arm]["after"]
        assert 0 <= numbers["cos2_first"] <= 1 and numbers["task_loss"] > 0
    assert not list((tmp_path / "o").glob(".finetune-*"))  # the trainers' folders are removed


def test_a_kill_during_the_write_keeps_the_previous_file(out, monkeypatch):
    """--overwrite replaces sinks.json only by renaming a complete new file over it: a run killed at the rename
    leaves the previous results whole."""
    import tokenfocus.io as tio

    before = (out / "sinks.json").read_text()

    def killed(src, dst):
        raise KeyboardInterrupt("killed at the rename")

    monkeypatch.setattr(tio.os, "replace", killed)
    result = CliRunner().invoke(app, ["probe", "sinks", "--model", "tiny-llama", "--n", "2", "--max-tokens", "12",
                                      "--out", str(out), "--overwrite"])
    assert result.exit_code != 0
    assert (out / "sinks.json").read_text() == before and json.loads(before)["n_texts"] == 3
