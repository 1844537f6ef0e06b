"""`tokenfocus study` configuration: arms x seeds of train configs sharing a model, a task and settings.

    model: smollm2-135m-instruct
    task: {name: arithmetic, tiers: [D1, D2, D3], n_train: 256}
    train: {reward: {...}, trl: {...}, diagnostics: {every: 5}, save_steps: 10}   # shared by every arm
        # diagnostics_arms: [full]   restricts the (costly) gradient diagnostics to some arms
    arms: {full: dapo, random20: random20, anchors20: anchors20, low2high: low2high,
           anchors20_all: {signals: [...], policy: {...}, loss: {preset: dapo}}}   # a method per arm
    seeds: [0, 1, 2]
    eval: {sets: {in-dist: {split: test, tiers: {D2: 200, D3: 100}}, hard: {split: test, tiers: {H3: 100}}},
           k: 4, max_new_tokens: 48, seed: 0}   # one fixed held-out set for every arm and seed
    samples: 6          # responses per arm rendered as token heatmaps in the report
    dir: runs/study
    warmup: {n_train: 512, epochs: 1, learning_rate: 1.0e-5}   # optional SFT on gold solutions first
    teacher: {sft: {n_train: 384, epochs: 3, learning_rate: 2.0e-5}}   # or {model: SPEC}: for teacher-guided arms
    # arms of a teacher study: {method: dapo, teacher: {form: loss, coef: 0.05}, reward: {kind: trace}}

An arm is a method (a preset name, a method file or a {signals, policy, loss} mapping), or a mapping of
``method`` with what the arm changes in its run: ``teacher`` (the distillation settings of
``losses.distill.DistillConfig``; the model defaults to the study's teacher), ``reward`` (replaces
``train.reward``), ``signal_source``. In a DPO or SFT study an arm is its pair weighting or OTR settings, and may
change the TRL settings of its runs with ``trl`` ({mode: uniform, trl: {learning_rate: 1.0e-6}}).

Every arm's train config is built and validated before anything runs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from ..models import check_model_spec
from ..options import check_keys, coerce_section, parse_section
from ..signals import SignalPass
from ..tasks import Task, parse_task
from .schema import ConfigError, load_yaml
from .train import build_train_config, run_dir_problems
from .warmup import WarmupConfig

STUDY_KEYS = {"model": str, "task": dict, "train": dict, "arms": dict, "seeds": list, "eval": dict,
              "samples": int, "dir": str, "description": str, "warmup": dict, "note": str, "see_also": str, "claims": list,
              "trainer": str, "teacher": dict}
TRAINERS = ("grpo", "dpo", "sft")  # what an arm is: a method (GRPO), a pair weighting (DPO), an OTR setting (SFT)
CLAIM_KEYS = {"arm": str, "test": str, "set": str, "text": str, "paper": str, "against": str}
# arm - baseline above 0; arm keeps more than half of the baseline's gain; arm - initial on a set above -½ gain
CLAIM_TESTS = ("beats", "keeps_gain", "preserves")
TRAIN_KEYS = {"reward": dict, "trl": dict, "diagnostics": dict, "diagnostics_arms": list, "save_steps": int,
              "signal_pass": SignalPass, "keep_checkpoints": bool, "pairs": dict, "data": dict, "shared_prefix": bool,
              "shared_prefill": bool}
# train keys each trainer reads (the others would be ignored, so they are refused)
TRAINER_KEYS = {"grpo": {"reward", "trl", "diagnostics", "diagnostics_arms", "save_steps", "signal_pass",
                         "keep_checkpoints", "shared_prefix", "shared_prefill"},
                "dpo": {"pairs", "trl", "save_steps", "keep_checkpoints"},
                "sft": {"data", "trl", "save_steps", "keep_checkpoints"}}
INITIAL_ARM = "initial"  # the starting model's evaluation, listed beside the arms
TEACHER_ARM = "teacher"  # the study teacher's evaluation, listed beside the arms
ARM_RUN_KEYS = ("teacher", "reward", "signal_source")  # what an arm may change in its run besides the method


@dataclass(frozen=True)
class StudyTeacher:
    """The teacher of a study's teacher-guided arms: an existing ``model`` spec, or one the study makes by SFT of
    its ``model`` on gold solutions (``sft``: the fields of ``WarmupConfig``; longer than the student's warm-up, so
    it is the stronger model) into ``dir/teacher/final``. Either way it is evaluated on the eval sets (arm
    "teacher" of the index)."""

    model: str | None = None
    sft: dict | None = None

    def problems(self) -> list[str]:
        if (self.model is None) == (self.sft is None):
            return [("give exactly one of model (an existing teacher's spec) and sft (the study makes the teacher: "
                     "{n_train, epochs, learning_rate, ...})")]
        if self.model is not None:
            return [f"model: {p}" for p in check_model_spec(self.model)]
        if not isinstance(self.sft, dict):
            return [f"sft: expected a mapping of warm-up fields, got {self.sft!r}"]
        problems: list[str] = []
        parse_section(WarmupConfig, self.sft, "sft", problems)
        return problems

    def warmup(self) -> WarmupConfig:
        return WarmupConfig(**self.sft)


def arm_parts(spec) -> tuple[object, dict]:
    """(method, run changes) of an arm: ``{method: dapo, teacher: {...}, reward: {...}}`` or a plain method."""
    if not isinstance(spec, dict) or not any(k in spec for k in (*ARM_RUN_KEYS, "method")):
        return spec, {}
    changes = {k: spec[k] for k in ARM_RUN_KEYS if k in spec}
    rest = {k: v for k, v in spec.items() if k not in ARM_RUN_KEYS}
    if "method" in rest:
        if len(rest) > 1:
            raise ConfigError(f"an arm with a method key takes only {['method', *ARM_RUN_KEYS]}; move "
                              f"{sorted(set(rest) - {'method'})} into its method")
        return rest["method"], changes
    return rest or "dapo", changes


@dataclass(frozen=True)
class StudyEval:
    """Held-out evaluation of every trained model and of the starting model, on ONE fixed set of problems
    (drawn with ``seed``; the same for every arm and run seed, so models compare problem by problem).

    ``sets``: {name: {split, tiers, n}} -- e.g. {in-dist: {split: test, tiers: {D2: 200, D3: 100}},
    hard: {split: test, tiers: {H3: 100, H4: 100}}}; ``tiers`` a mapping {tier: count} (``n`` is then their
    sum) or a list cycled in turn (with ``n``). A set may name its own ``task`` (a task spec): a skill the
    training must not cost, e.g. {short: {task: {name: arithmetic}, tiers: {D2: 100}}} beside a long-context task. Without ``sets``, each of ``splits`` is a set of ``n`` problems.
    Greedy pass@1 always; mean@k over ``k`` samples at ``temperature`` when k > 0.
    """

    splits: list = field(default_factory=lambda: ["test", "hard-test"])
    n: int = 64
    sets: dict | None = None
    k: int = 0
    temperature: float = 1.0
    max_new_tokens: int = 48
    seed: int = 0
    batch_size: int = 32
    shared_prefill: bool = False  # mean@k's samples share one prompt forward (recipes.evaluate.EvalConfig)

    def eval_sets(self) -> dict[str, dict]:
        """name -> {"split", "n", "tiers", "task"} (the sets to evaluate, in order; task None: the study's)."""
        if self.sets is None:
            return {split: {"split": split, "n": self.n, "tiers": None, "task": None} for split in self.splits}
        out = {}
        for name, spec in self.sets.items():
            tiers = spec.get("tiers")
            n = sum(tiers.values()) if isinstance(tiers, dict) else spec.get("n", self.n)
            out[name] = {"split": spec.get("split", "test"), "n": n, "tiers": tiers, "task": spec.get("task")}
        return out

    def record(self) -> dict:
        """The settings as study.json keeps them (``shared_prefill`` only when set: older studies lack the key)."""
        return {k: v for k, v in vars(self).items() if k != "shared_prefill" or v}

    def problems(self) -> list[str]:
        found = [f"{name} must be >= {low}, got {getattr(self, name)}"
                 for name, low in (("n", 1), ("k", 0), ("max_new_tokens", 1), ("batch_size", 1))
                 if getattr(self, name) < low]
        if self.temperature <= 0:
            found.append(f"temperature must be > 0 (it is the sampling temperature of mean@k), got {self.temperature}")
        if self.sets is None:
            if not self.splits or not all(isinstance(x, str) for x in self.splits):
                found.append(f"splits: expected a non-empty list of split names, got {self.splits!r}")
            return found
        if not isinstance(self.sets, dict) or not self.sets:
            return found + [f"sets: expected a mapping {{name: {{split, tiers, n}}}}, got {self.sets!r}"]
        for name, spec in self.sets.items():
            if not isinstance(spec, dict):
                found.append(f"sets.{name}: expected a mapping {{split, tiers, n}}, got {spec!r}")
                continue
            unknown = sorted(set(spec) - {"split", "tiers", "n", "task"})
            if unknown:
                found.append(f"sets.{name}: unknown key(s) {unknown}; valid keys: ['n', 'split', 'task', 'tiers']")
            if "task" in spec and not (isinstance(spec["task"], dict) and isinstance(spec["task"].get("name"), str)):
                found.append(f"sets.{name}.task: expected a task spec {{name: ..., ...}}, got {spec['task']!r}")
            if not isinstance(spec.get("split", "test"), str):
                found.append(f"sets.{name}.split: expected a split name, got {spec['split']!r}")
            tiers = spec.get("tiers")
            if tiers is not None and not isinstance(tiers, (list, dict)):
                found.append(f"sets.{name}.tiers: expected a list of tiers or a mapping {{tier: count}}, got {tiers!r}")
            n = spec.get("n", 1)
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                found.append(f"sets.{name}.n: expected an int >= 1, got {n!r}")
        return found


@dataclass
class StudyConfig:
    model: str
    task: Task
    arms: dict
    train: dict = field(default_factory=dict)
    seeds: list = field(default_factory=lambda: [0])
    eval: StudyEval = field(default_factory=StudyEval)
    samples: int = 6
    dir: str = "runs/study"
    description: str = ""
    note: str = ""  # a sentence the report shows under its title
    see_also: str | None = None  # a file the report links to (resolved against the study file's folder)
    # Claims of other papers the report judges against the arm named "full": [{arm, test, set, text, paper}];
    # none: the flagship's claims.
    claims: list = field(default_factory=list)
    warmup: WarmupConfig | None = None
    base: Path | None = None  # the study file's folder: method paths in arms are relative to it
    trainer: str = "grpo"  # grpo: arms are methods; dpo: pair weightings (weights:); sft: OTR settings (otr:, or null)
    teacher: StudyTeacher | None = None

    @property
    def teacher_model(self) -> str | None:
        """The teacher arms distil from: the given spec, or the one the study makes in ``dir/teacher/final``."""
        if self.teacher is None:
            return None
        return self.teacher.model or str(Path(self.dir) / TEACHER_ARM / "final")

    @property
    def start_model(self) -> str:
        """What every arm trains from: the warm-up's result when there is a warm-up, else ``model``."""
        return str(Path(self.dir) / "warmup" / "final") if self.warmup else self.model

    def run_config(self, arm: str, seed: int):
        """The arm's run config at ``seed``: a TrainConfig (grpo), DPORunConfig (dpo) or SFTRunConfig (sft)."""
        run = {"dir": str(Path(self.dir) / f"{arm}-s{seed}"), "seed": seed}
        if "save_steps" in self.train:
            run["save_steps"] = self.train["save_steps"]
        if self.trainer in ("dpo", "sft"):
            settings, trl = self._arm_trl(arm)
        if self.trainer == "dpo":
            from .dpo import build_dpo_config

            data = {"model": self.start_model, "pairs": copy.deepcopy(self.train["pairs"]),
                    "weights": settings or {}, "trl": trl, "run": run}
            return build_dpo_config(data, base=self.base, where=f"arm {arm!r}", check_model=self.warmup is None)
        if self.trainer == "sft":
            from .sft import build_sft_config

            data = {"model": self.start_model, "data": copy.deepcopy(self.train["data"]), "otr": settings, "trl": trl,
                    "run": run}
            return build_sft_config(data, base=self.base, where=f"arm {arm!r}", check_model=self.warmup is None)
        method, changes = arm_parts(self.arms[arm])
        data = {"model": self.start_model, "task": self.task.spec(), "method": copy.deepcopy(method),
                "reward": dict(changes.get("reward", self.train.get("reward", {}))),
                "trl": dict(self.train.get("trl", {})),
                "run": {"dir": str(Path(self.dir) / f"{arm}-s{seed}"), "seed": seed}}
        if "signal_source" in changes:
            data["signal_source"] = changes["signal_source"]
        if "teacher" in changes:
            data["teacher"] = self._arm_teacher(arm, changes["teacher"])
        if "save_steps" in self.train:
            data["run"]["save_steps"] = self.train["save_steps"]
        if "signal_pass" in self.train:
            data["signal_pass"] = self.train["signal_pass"]
        for key in ("shared_prefix", "shared_prefill"):
            if key in self.train:
                data[key] = self.train[key]
        arms = self.train.get("diagnostics_arms")
        if self.train.get("diagnostics") is not None and (arms is None or arm in arms):
            data["diagnostics"] = copy.deepcopy(self.train["diagnostics"])
        # The warm-up's model does not exist before the warm-up runs, nor a teacher the study makes; ``model`` and a
        # given teacher are checked on loading.
        made = self.warmup is not None or (self.teacher is not None and self.teacher.sft is not None)
        return build_train_config(data, base=self.base, where=f"arm {arm!r}", check_model=not made)

    def _arm_trl(self, arm: str) -> tuple:
        """A DPO or SFT arm's own settings (weights or OTR) and its TRL settings: ``train.trl`` updated by the
        arm's ``trl`` mapping, so one study can hold arms that differ in learning rate or steps."""
        settings = copy.deepcopy(self.arms[arm])
        trl = dict(self.train.get("trl", {}))
        if isinstance(settings, dict) and "trl" in settings:
            changes = settings.pop("trl")
            if not isinstance(changes, dict):
                raise ConfigError(f"arm {arm!r}: trl: expected a mapping of the TRL settings this arm changes "
                                  f"({{learning_rate: 1.0e-6}}), got {changes!r}")
            trl.update(changes)
            settings = settings or ({} if self.trainer == "dpo" else None)
        return settings, trl

    def distils(self, arm: str) -> bool:
        """Whether ``arm`` distils from a teacher (its run has ``teacher`` settings)."""
        return self.trainer == "grpo" and "teacher" in arm_parts(self.arms[arm])[1]

    def _arm_teacher(self, arm: str, spec) -> dict:
        if not isinstance(spec, dict):
            raise ConfigError(f"arm {arm!r}: teacher: expected the distillation settings as a mapping "
                              f"({{form: loss, coef: 0.05, ...}}), got {spec!r}")
        if "model" not in spec and self.teacher_model is None:
            raise ConfigError(f"arm {arm!r}: its teacher has no model: give the study a teacher ({{model: SPEC}} or "
                              "{sft: {...}}) or the arm's teacher.model")
        return {"model": self.teacher_model, **spec}

    def to_dict(self) -> dict:
        """The study as plain data (study.yaml)."""
        return {**self.index(), "train": self.train, "samples": self.samples, "dir": self.dir,
                "warmup": None if self.warmup is None else warmup_dict(self.warmup)}

    def index(self) -> dict:
        """What study.json records about the study itself."""
        out = {"description": self.description, "note": self.note, "see_also": self.see_also,
               "claims": self.claims, "model": self.model, "task": self.task.spec(), "arms": self.arms,
               "seeds": self.seeds, "eval": self.eval.record()}
        if self.teacher is not None:  # studies without a teacher predate the key
            out["teacher"] = {k: v for k, v in vars(self.teacher).items() if v is not None}
        return out if self.trainer == "grpo" else {**out, "trainer": self.trainer}  # GRPO studies predate the key


def warmup_dict(warmup: WarmupConfig) -> dict:
    """The warm-up as study.yaml records it; ``otr`` only when set (a study.yaml from before it existed lacks it,
    and plain SFT must not read as a change)."""
    return {k: v for k, v in vars(warmup).items() if not (k == "otr" and v is None)}


def eval_set_problems(study_task: Task, evaluation: StudyEval) -> list[str]:
    """Every eval set is drawn now (a few milliseconds for generated tasks), so a set that cannot be drawn --
    an unknown split or tier, more problems than a tier holds -- fails before any model loads."""
    found = []
    where = "eval.splits" if evaluation.sets is None else "eval.sets"
    for name, spec in evaluation.eval_sets().items():
        if spec["task"] is not None:  # the set's own task (its spec was checked by StudyEval)
            own: list[str] = []
            task = parse_task(spec["task"], own)
            if task is None:
                found += [f"{where}: {name!r}: task: {p}" for p in own]
                continue
        else:
            task = study_task
        if spec["split"] not in task.splits:
            found.append(f"{where}: {name!r}: split {spec['split']!r} is not a split of task {task.name!r}: "
                         f"{list(task.splits)}")
            continue
        try:
            task.eval_examples(spec["split"], spec["n"], evaluation.seed, tiers=spec["tiers"])
        except (ValueError, OSError) as error:
            found.append(f"{where}: {name!r}: {error}")
    return found


def claim_problems(claims: list, arms: dict, evaluation: StudyEval | None) -> list[str]:
    """Problems of a study's declared claims: each {arm, test, text, set (default in-dist), paper (optional),
    against (the baseline arm, default ``full``)}, its arm one of the study's other than its baseline, its set
    ``in-dist``, ``hard`` or an eval set's name."""
    problems = []
    sets = list(evaluation.eval_sets()) if evaluation is not None else []
    if any(isinstance(c, dict) and "against" not in c for c in claims) and "full" not in arms:
        problems.append("claims: without 'against' they are judged against an arm named 'full' (the baseline); "
                        "the study has none")
    for i, claim in enumerate(claims):
        where = f"claims[{i}]"
        if not isinstance(claim, dict):
            problems.append(f"{where}: expected a mapping {{arm, test, text, set, paper, against}}, got {claim!r}")
            continue
        check_keys(where, claim, CLAIM_KEYS, problems)
        problems += [f"{where}: missing required key {key!r}" for key in ("arm", "test", "text") if key not in claim]
        base = claim.get("against", "full")
        if "against" in claim and claim["against"] not in arms:
            problems.append(f"{where}.against: {claim['against']!r} is not an arm; arms: {sorted(map(str, arms))}")
        if "arm" in claim and (claim["arm"] not in arms or claim["arm"] == base):
            problems.append(f"{where}.arm: {claim['arm']!r} must be an arm other than {base!r} (the baseline); "
                            f"arms: {sorted(map(str, arms))}")
        if "test" in claim and claim["test"] not in CLAIM_TESTS:
            problems.append(f"{where}.test: {claim['test']!r} is not one of {list(CLAIM_TESTS)}")
        if claim.get("set", "in-dist") not in ("in-dist", "hard", *sets):
            problems.append(f"{where}.set: {claim['set']!r} is not 'in-dist', 'hard' or an eval set {sets}")
    return problems


def load_study_config(path: Path) -> StudyConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study config not found: {path}")
    data = coerce_section(load_yaml(path), STUDY_KEYS)
    problems: list[str] = []
    check_keys("study", data, STUDY_KEYS, problems)
    for key in ("model", "task", "arms"):
        if key not in data:
            problems.append(f"missing required key {key!r}")
    if isinstance(data.get("model"), str):
        problems += [f"model: {p}" for p in check_model_spec(data["model"])]
    train = coerce_section(data["train"], TRAIN_KEYS) if isinstance(data.get("train"), dict) else {}
    check_keys("train", train, TRAIN_KEYS, problems)
    trainer = data.get("trainer", "grpo")
    if trainer not in TRAINERS:
        problems.append(f"trainer: {trainer!r} is not one of {list(TRAINERS)}")
    else:
        ignored = sorted(k for k in train if k in TRAIN_KEYS and k not in TRAINER_KEYS[trainer])
        if ignored:
            problems.append(f"train: {ignored} are not read by trainer {trainer!r} (it reads "
                            f"{sorted(TRAINER_KEYS[trainer])}); remove them")
        needed = {"dpo": "pairs", "sft": "data"}.get(trainer)
        if needed and needed not in train:
            problems.append(f"train.{needed}: trainer {trainer!r} needs it (see tokenfocus.config.{trainer})")
    arms = data.get("arms") if isinstance(data.get("arms"), dict) else {}
    if "arms" in data and not arms:
        problems.append("arms: expected a non-empty mapping {arm name: method}")
    for reserved, what in ((INITIAL_ARM, "the starting model's"), (TEACHER_ARM, "the study teacher's")):
        if reserved in arms:
            problems.append(f"arms: {reserved!r} is reserved for {what} evaluation; rename that arm")
    problems += [f"arms: arm names must be strings, got {arm!r}" for arm in arms if not isinstance(arm, str)]
    unknown = [a for a in train.get("diagnostics_arms") or [] if a not in arms] if isinstance(
        train.get("diagnostics_arms"), list) else []
    if unknown:
        problems.append(f"train.diagnostics_arms: {unknown} are not arms; arms: {sorted(map(str, arms))}")
    seeds = data.get("seeds", [0])
    if isinstance(seeds, list) and (not seeds or not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds)):
        problems.append(f"seeds: expected a non-empty list of ints, got {seeds!r}")
    if isinstance(data.get("samples"), int) and data["samples"] < 0:
        problems.append(f"samples must be >= 0, got {data['samples']}")
    if isinstance(data.get("dir"), str):
        problems += [f"dir: {p}" for p in run_dir_problems(data["dir"])]
    task = None
    if isinstance(data.get("task"), dict) and not isinstance(data["task"].get("name"), str):
        problems.append(f"task.name: expected a registered task name, got {data['task'].get('name')!r}")
    elif isinstance(data.get("task"), dict):
        task = parse_task(data["task"], problems, base=path.parent)
    evaluation = parse_section(StudyEval, data.get("eval"), "eval", problems)
    if task is not None and evaluation is not None:
        problems += eval_set_problems(task, evaluation)
    warmup = parse_section(WarmupConfig, data["warmup"], "warmup", problems) if "warmup" in data else None
    teacher = parse_section(StudyTeacher, data["teacher"], "teacher", problems) if "teacher" in data else None
    if teacher is not None and trainer != "grpo":
        problems.append(f"teacher: only GRPO arms distil from a teacher; this study's trainer is {trainer!r}")
    claims = [dict(c) for c in data.get("claims") or [] if isinstance(c, dict)]
    problems += claim_problems(data.get("claims") or [], arms, evaluation)
    if problems:
        raise ConfigError(f"{path}: invalid study config:\n  - " + "\n  - ".join(problems))
    arms = {arm: str(method) if isinstance(method, int) else method for arm, method in arms.items()}
    study = StudyConfig(model=data["model"], task=task, arms=arms, train=train, seeds=seeds, eval=evaluation,
                        samples=data.get("samples", 6), dir=data.get("dir", "runs/study"),
                        description=data.get("description", ""), warmup=warmup, base=path.parent,
                        note=data.get("note", ""), claims=claims, trainer=trainer, teacher=teacher,
                        see_also=str((path.parent / data["see_also"]).resolve()) if data.get("see_also") else None)
    errors = []
    for arm in study.arms:  # every arm's train config is validated (model, TRL, policy dry run) before anything runs
        try:
            study.run_config(arm, study.seeds[0])
        except ConfigError as error:
            errors.append(str(error))
    if errors:
        raise ConfigError(f"{path}:\n" + "\n".join(errors))
    return study
