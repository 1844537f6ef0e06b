"""`tokenfocus prune` configuration: a sweep of pruning methods x budgets x layers on a testbed, each method next
to random pruning at the same budget, validated before any model loads.

    model: smollm2-135m-instruct
    testbed: {name: facts, n: 16, distractors: 20, seed: 0}     # or {name: gsm8k, n: 16, path: ../shared/data/gsm8k}
        # or {name: digits, n: 64, seed: 0}: the digits mini-VLM's 16 image tokens (prune.digits; its trained projector)
    methods: [random, attention, ttv, transprune, divprune, sads, embedlens, progressive, relevance, predicted]
    budgets: [0.25, 0.5, 0.75]        # kept fraction of the context segment
    layers: [2, 8, 16]                # the drop happens before these layers (0: at the input)
    random_draws: 4                   # random pruning is averaged over this many draws per example
    progressive: {accumulate: [6, 7, 8, 9, 10, 11], prune_layers: [7, 9, 12], ratios: [0.875, 0.625, 0.125]}
    horizon: {layers: [0, 4, 8, 12, 16, 20, 24, 28], window: 8, n: 4}   # the information map; null: skip it
    ttv_window: 6                     # TTV accumulates over the layers [K - 6, K) before a drop at layer K
    sads: {m: 64, h: 0.01}            # zeroth-order directions and step
    lens: {share: 0.10, k: 3}         # EmbedLens: attractors are nearest to > 10 % of the context's hidden states
    relevance: {calibration: 16, steps: 300}   # A4: the predictor trains on this many other examples' relevance
    show: 3                           # examples shown in the token view
    dir: runs/prune-facts
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..models import DEFAULT_MODEL, check_model_spec
from ..options import check_keys
from .schema import ConfigError, load_yaml

METHODS = ("random", "attention", "ttv", "transprune", "divprune", "sads", "embedlens", "progressive", "relevance",
           "predicted")
TESTBEDS = {"facts": {"n", "distractors", "seed", "question"}, "gsm8k": {"n", "path", "seed"}, "digits": {"n", "seed", "projector"}}
TOP_KEYS = {"model": str, "testbed": dict, "methods": list, "budgets": list, "layers": list, "random_draws": int,
            "progressive": dict, "horizon": dict | None, "ttv_window": int, "sads": dict, "lens": dict, "show": int,
            "dir": str, "seed": int, "relevance": dict}


@dataclass(frozen=True)
class PruneConfig:
    model: str = DEFAULT_MODEL
    testbed: dict = field(default_factory=lambda: {"name": "facts", "n": 16, "distractors": 20, "seed": 0})
    methods: list = field(default_factory=lambda: list(METHODS))
    budgets: list = field(default_factory=lambda: [0.25, 0.5, 0.75])
    layers: list = field(default_factory=lambda: [2, 8, 16])
    random_draws: int = 4
    progressive: dict = field(default_factory=lambda: {"accumulate": list(range(6, 12)), "prune_layers": [7, 9, 12],
                                                       "ratios": [0.875, 0.625, 0.125]})
    horizon: dict | None = field(default_factory=lambda: {"layers": [0, 4, 8, 12, 16, 20, 24, 28], "window": 8,
                                                          "n": 4})
    ttv_window: int = 6
    sads: dict = field(default_factory=lambda: {"m": 64, "h": 0.01})
    lens: dict = field(default_factory=lambda: {"share": 0.10, "k": 3})
    relevance: dict = field(default_factory=lambda: {"calibration": 16, "steps": 300})
    show: int = 3
    dir: str = "runs/prune"
    seed: int = 0

    @property
    def run_dir(self) -> Path:
        return Path(self.dir)

    def to_dict(self) -> dict:
        return asdict(self)

    def problems(self) -> list[str]:
        found = []
        name = self.testbed.get("name")
        if name not in TESTBEDS:
            found.append(f"testbed.name: {name!r} is not one of {sorted(TESTBEDS)}")
        else:
            unknown = sorted(set(self.testbed) - TESTBEDS[name] - {"name"})
            if unknown:
                found.append(f"testbed: unknown key(s) {unknown} for {name!r}; valid: {sorted(TESTBEDS[name])}")
            if not isinstance(self.testbed.get("n", 16), int) or self.testbed.get("n", 16) < 1:
                found.append(f"testbed.n must be an int >= 1, got {self.testbed.get('n')!r}")
            if name == "gsm8k" and not Path(str(self.testbed.get("path", ""))).exists():
                found.append(f"testbed.path: {self.testbed.get('path')!r} does not exist; give a GSM8K test.jsonl or "
                             "its folder (e.g. ../shared/data/gsm8k)")
            if name == "digits":
                from ..prune.digits import FIXTURE

                projector = Path(str(self.testbed.get("projector", FIXTURE)))
                if not projector.is_file():
                    found.append(f"testbed.projector: no trained digits projector at {projector}; train one with "
                                 "`python -m tokenfocus.prune.digits`")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            found.append(f"methods: {unknown or 'none given'}; choose from {list(METHODS)}")
        bad = [b for b in self.budgets if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 < b <= 1]
        if bad or not self.budgets:
            found.append(f"budgets: {bad or 'none given'} -- a budget is the kept fraction of the context, in (0, 1]")
        bad = [x for x in self.layers if isinstance(x, bool) or not isinstance(x, int) or x < 0]
        if bad or not self.layers:
            found.append(f"layers: {bad or 'none given'} -- layer indices >= 0 (the drop happens before the layer)")
        if self.random_draws < 1 or self.ttv_window < 1 or self.show < 0:
            found.append(f"random_draws and ttv_window must be >= 1 and show >= 0; got {self.random_draws}, "
                         f"{self.ttv_window}, {self.show}")
        if self.horizon is not None:
            unknown = sorted(set(self.horizon) - {"layers", "window", "n"})
            if unknown:
                found.append(f"horizon: unknown key(s) {unknown}; valid: ['layers', 'n', 'window']")
            if not (isinstance(self.horizon.get("window", 8), int) and self.horizon.get("window", 8) >= 1):
                found.append(f"horizon.window must be an int >= 1, got {self.horizon.get('window')!r}")
        progressive = self.progressive
        ratios = progressive.get("ratios", [])
        if len(progressive.get("prune_layers", [])) != len(ratios) or any(not 0 < r <= 1 for r in ratios):
            found.append(f"progressive: one ratio in (0, 1] per pruning layer; got {progressive}")
        return found

    def layer_problems(self, num_layers: int) -> list[str]:
        """Layers beyond the model (known once its config is read)."""
        used = {"layers": self.layers, "progressive.prune_layers": self.progressive.get("prune_layers", []),
                "progressive.accumulate": self.progressive.get("accumulate", []),
                "horizon.layers": (self.horizon or {}).get("layers", [])}
        return [f"{key}: {[x for x in values if x >= num_layers]} are beyond the model's layers 0..{num_layers - 1}"
                for key, values in used.items() if any(x >= num_layers for x in values)]


def load_prune_config(path: Path, overrides: dict | None = None) -> PruneConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"prune config not found: {path}")
    data = {**(load_yaml(path) or {}), **(overrides or {})}
    problems: list[str] = []
    check_keys("prune config", data, TOP_KEYS, problems)
    if isinstance(data.get("model"), str):
        problems += [f"model: {p}" for p in check_model_spec(data["model"])]
    if problems:
        raise ConfigError(f"{path}: invalid prune config:\n  - " + "\n  - ".join(problems))
    testbed = dict(data.get("testbed") or PruneConfig().testbed)
    for key in ("path", "projector"):  # files in the testbed are relative to the config's folder
        if isinstance(testbed.get(key), str) and not Path(testbed[key]).is_absolute():
            testbed[key] = str((path.parent / testbed[key]).resolve())
    config = PruneConfig(**{**{k: v for k, v in data.items() if k != "testbed"}, "testbed": testbed})
    problems = config.problems()
    if problems:
        raise ConfigError(f"{path}: invalid prune config:\n  - " + "\n  - ".join(problems))
    return config
