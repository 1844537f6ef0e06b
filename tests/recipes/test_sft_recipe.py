"""`tokenfocus sft`: bad rows and settings refused before any model loads, and each shipped config (SFT, OTR) trains
in a run directory (two steps on a tiny model) with OTR's statistics logged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tokenfocus.config import ConfigError
from tokenfocus.config.sft import build_sft_config, load_sft_config
from tokenfocus.io import latest_metrics
from tokenfocus.recipes.sft import run_sft

TINY = "tiny-llama:layers=2,hidden=32,heads=4,kv_heads=2,intermediate=64"
CONFIGS = Path(__file__).parents[2] / "configs" / "sft"


def test_bad_rows_and_settings_are_listed_before_any_model_loads(tmp_path):
    path = tmp_path / "sft.jsonl"
    rows = [{"prompt": "1+1?", "completion": "2"}, {"prompt": "1+2?"}, {"prompt": "", "completion": "3"},
            {"prompt": [{"role": "user", "content": "1+3?"}], "completion": "4"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n[1, 2]\n")
    with pytest.raises(ConfigError) as error:
        build_sft_config({"model": "/nonexistent/model.gguf", "data": {"path": str(path)},
                          "otr": {"k": 0, "baseline": "median"}, "trl": {"loss_type": "dft", "max_step": 3}})
    message = str(error.value)
    for expected in ("sft.jsonl:2: missing ['completion']", "sft.jsonl:3: prompt is empty",
                     "sft.jsonl:4: prompt and completion mix plain text and chat",
                     "sft.jsonl:5: expected a JSON object", "otr.k (samples per position) must be >= 1",
                     "otr.baseline must be 'none' or 'mean'", "unknown SFTConfig field 'max_step'", "model:"):
        assert expected in message, (expected, message)
    good = tmp_path / "ok.jsonl"
    good.write_text(json.dumps(rows[0]) + "\n")
    with pytest.raises(ConfigError, match="OTR replaces the NLL loss"):
        build_sft_config({"model": TINY, "data": {"path": str(good)}, "otr": {"k": 2}, "trl": {"loss_type": "dft"}})
    build_sft_config({"model": TINY, "data": {"path": str(good)}, "trl": {"loss_type": "dft"}})  # plain SFT: TRL's


@pytest.mark.parametrize("name", ["sft.yaml", "otr.yaml"])
def test_each_shipped_sft_config_validates_and_trains_two_steps(tmp_path, name):
    shipped = load_sft_config(CONFIGS / name)
    assert len(shipped.rows) == 384 and (shipped.otr is not None) == (name == "otr.yaml")
    data = yaml.safe_load((CONFIGS / name).read_text())
    data.update(model=TINY, run={"dir": str(tmp_path / "run"), "seed": 0, "save_steps": 1})
    data["data"]["n"] = 16
    data["trl"].update(max_steps=2, per_device_train_batch_size=8, learning_rate=1e-3, max_length=128)
    run_dir, _ = run_sft(build_sft_config(data))
    rows = latest_metrics(run_dir / "metrics.jsonl")
    assert sorted(rows) == [1, 2]
    assert ("otr/gt_sample_frac" in rows[2]) == (name == "otr.yaml")
    assert (run_dir / "final" / "model.safetensors").is_file() and (run_dir / "config.yaml").is_file()
    with pytest.raises(ValueError, match="is not empty"):
        run_sft(build_sft_config(data))
