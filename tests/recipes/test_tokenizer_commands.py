"""`tokenfocus tokenizer bytes | probe | metrics | transfer` end to end on a tiny model, one output directory,
one page checked in headless Chromium; bad input refused before any model loads."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from tokenfocus.cli import app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TEXTS = ["Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
         "Weng earns 12 dollars an hour for babysitting. Yesterday, she just did 50 minutes of babysitting.",
         "Betty is saving money for a new wallet which costs 100 dollars. Betty has only half of the money."] * 4


def invoke(*args):
    return CliRunner().invoke(app, ["tokenizer", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    texts = root / "texts.txt"
    texts.write_text("\n".join(TEXTS))
    out = root / "probes"
    common = ["--out", str(out)]
    result = invoke("bytes", "--model", "tiny-llama", "-p", "She counted the oran", "--heal-texts", str(texts),
                    "--n-heal", "6", "--check", "all", *common)
    assert result.exit_code == 0, result.output
    result = invoke("ensemble", "--model", "tiny-llama", "--train-text", str(texts), "--eval-text", str(texts),
                    "--vocab-size", "300", "--steps", "3", "--n", "4", "--weight", "0.7", "--check", "all", *common)
    assert result.exit_code == 0, result.output
    result = invoke("probe", "--model", "tiny-llama", "--n", "2", "--batch-size", "2", *common)
    assert result.exit_code == 0, result.output
    result = invoke("metrics", "--text", str(texts), "-t", "tiny-llama", "-t", "bpe:300", "--train-text", str(texts),
                    "--k-max", "3", *common)
    assert result.exit_code == 0, result.output
    result = invoke("transfer", "--model", "tiny-llama", "--train-text", str(texts), "--eval-text", str(texts),
                    "--vocab-size", "300", "--steps", "2", "--max-tokens", "32", "--n-eval", "4", *common)
    assert result.exit_code == 0, result.output
    return out


def test_each_command_writes_its_file(out):
    data = {name: json.loads((out / f"{name}.json").read_text())
            for name in ("bytes", "ensemble", "phantom", "metrics", "transfer")}
    prompt = data["bytes"]["prompts"][0]
    assert prompt["prompt"] == "She counted the oran" and prompt["tail"] == "n"  # characters are pre-tokens
    ps = [b["p"] for b in prompt["next_bytes"]]
    assert len(ps) == 8 and ps == sorted(ps, reverse=True) and 0 < sum(ps) <= 1 + 1e-9  # the top 8 of 257
    heal = data["bytes"]["healing"]
    assert heal["n"] == 6 and len(heal["cases"]) == 6
    assert heal["healed_accuracy"] == sum(c["healed_correct"] for c in heal["cases"]) / 6
    for case in heal["cases"]:
        assert case["prompt"] + case["gold"] in " ".join(TEXTS) and case["gold"]
    ensemble = data["ensemble"]
    assert ensemble["n"] == 4 and ensemble["small"]["steps"] == 3 and len(ensemble["small"]["losses"]) == 3
    for case in ensemble["cases"]:  # per byte p_mix = 0.7 p_model + 0.3 p_small >= 0.7 p_model and 0.3 p_small
        assert case["bits_ensemble"] <= case["bytes"] * -math.log2(0.7) + case["bits_model"] + 1e-9
        assert case["bits_ensemble"] <= case["bytes"] * -math.log2(0.3) + case["bits_small"] + 1e-9
        if case["bytes"] == 1:  # one byte: the mixture lies between its members
            low, high = sorted([case["bits_model"], case["bits_small"]])
            assert low - 1e-9 <= case["bits_ensemble"] <= high + 1e-9
    phantom = data["phantom"]["conditions"]
    assert set(phantom) == {"plain", "masked"} and phantom["plain"]["trials"] == phantom["masked"]["trials"] >= 2
    metrics = data["metrics"]
    assert [r["tokenizer"] for r in metrics["tokenizers"]] == ["tiny-llama", "bpe:300"]
    assert sorted(metrics["ranking_by_bits_per_char_lzma"]) == ["bpe:300", "tiny-llama"]
    char, bpe = metrics["tokenizers"]
    assert char["bytes_per_token"] == pytest.approx(1.0) and bpe["bytes_per_token"] > 1.5
    transfer = data["transfer"]
    assert set(transfer["methods"]) == {"mean", "focus", "random"}
    assert all(len(m["losses"]) == 2 and len(m["after"]) == 4 for m in transfer["methods"].values())
    assert "mean_vs_random_before" in transfer["comparisons"]


def test_one_page_in_a_headless_browser(out, tmp_path):
    assert CHROMIUM, "Debian's chromium is needed for the page test: apt-get install -y chromium (make test does)"
    page = out / "tokenizer.html"
    text = page.read_text()
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "<script" not in text
    run = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
                          "--v=0", "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
                         check=False)
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    dom = run.stdout
    for section in ("bytes", "ensemble", "phantom", "metrics", "transfer"):
        assert f'id="{section}"' in dom
    assert dom.count('class="next-bytes"') == 1 and 'id="healing"' in dom
    figure = re.search(r'<figure id="fig-phantom-types">(.*?)</figure>', dom, re.DOTALL).group(1)
    assert figure.index("<figcaption>") < figure.index("<svg") and figure.count("<rect") >= 16  # 8 types x 2
    assert 'id="metrics-table"' in dom and "bpe:300" in dom and 'id="transfer-table"' in dom


def test_bad_input_fails_before_any_model_loads(tmp_path, monkeypatch):
    import tokenfocus.cli_tokenizer as cli_tokenizer

    monkeypatch.setattr(cli_tokenizer, "_load", lambda spec: pytest.fail("a model was loaded"))
    cases = [
        (["bytes", "--n-heal", "3"], "--n-heal needs --heal-texts"),
        (["bytes", "--check", "some"], "choose all, mass or none"),
        (["bytes", "--heal-texts", str(tmp_path / "missing.txt"), "--n-heal", "2"], "not found"),
        (["metrics", "-t", "bpe:300"], "trained on --train-text"),
        (["metrics", "-t", "bpe:big"], "expected bpe:N"),
        (["transfer", "--train-text", str(tmp_path / "a.txt"), "--eval-text", str(tmp_path / "a.txt"),
          "--methods", "mean,zett"], "choose from mean, focus, random"),
    ]
    for args, message in cases:
        result = invoke(*args, "--out", str(tmp_path / "o"))
        assert result.exit_code == 2 and message in result.output, (args, result.output)


def test_an_output_is_never_replaced_silently(out, monkeypatch):
    import tokenfocus.cli_tokenizer as cli_tokenizer

    monkeypatch.setattr(cli_tokenizer, "_load", lambda spec: pytest.fail("a model was loaded"))
    before = (out / "bytes.json").read_text()
    result = invoke("bytes", "--out", str(out))
    assert result.exit_code == 2 and "already holds bytes.json; pass --overwrite" in result.output
    assert (out / "bytes.json").read_text() == before
    run_dir = out.parent / "a-run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("x: 1\n")
    result = invoke("probe", "--out", str(run_dir))
    assert result.exit_code == 2 and "holds a training run or study" in result.output


def test_a_torn_file_beside_the_output_is_named_and_the_new_file_kept(tmp_path):
    """A bytes.json cut off mid-write (by hand: the commands write atomically) stops the page with a message
    naming it; the command's own file is written whole before that."""
    out = tmp_path / "o"
    out.mkdir()
    (out / "bytes.json").write_text('{"model": "tiny-llama", "prompts": [{"prompt": "ab')
    texts = tmp_path / "t.txt"
    texts.write_text("\n".join(TEXTS))
    result = invoke("metrics", "--text", str(texts), "-t", "tiny-llama", "--k-max", "2", "--out", str(out))
    assert result.exit_code == 2 and "bytes.json is not a complete JSON file" in result.output
    assert json.loads((out / "metrics.json").read_text())["tokenizers"][0]["tokenizer"] == "tiny-llama"
    assert not list(out.glob(".*tmp*"))  # no temporary file left behind


def test_a_kill_during_the_write_keeps_the_previous_file(tmp_path, monkeypatch):
    """--overwrite replaces a file only by renaming a complete new one over it: a run killed between writing and
    renaming (simulated at the rename) leaves the previous results whole."""
    import tokenfocus.io as tio

    texts = tmp_path / "t.txt"
    texts.write_text("\n".join(TEXTS))
    out = tmp_path / "o"
    args = ["metrics", "--text", str(texts), "-t", "tiny-llama", "--k-max", "2", "--out", str(out)]
    assert invoke(*args).exit_code == 0
    before = (out / "metrics.json").read_text()

    def killed(src, dst):
        raise KeyboardInterrupt("killed at the rename")

    monkeypatch.setattr(tio.os, "replace", killed)
    result = CliRunner().invoke(app, ["tokenizer", *args, "--k-max", "3", "--overwrite"])
    assert result.exit_code != 0  # click turns the interrupt into "Aborted!"
    assert (out / "metrics.json").read_text() == before
    assert json.loads(before)["tokenizers"][0]["H_2"] > 0
