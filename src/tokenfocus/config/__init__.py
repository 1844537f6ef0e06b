"""Typed configs (train, study, warm-up, method) and the one preset system. Imports no trainer.

A method preset is ``config/methods/<name>.yaml``; ``resolve_method`` turns a preset name, a method YAML
path or an inline dict into one validated ``MethodConfig``.
"""

from .method import MethodConfig, method_preset, method_presets, resolve_method
from .schema import ConfigError, load_yaml
from .study import StudyConfig, StudyEval, load_study_config
from .train import RunConfig, TrainConfig, build_train_config, load_train_config
from .warmup import WarmupConfig

__all__ = ["ConfigError", "MethodConfig", "RunConfig", "StudyConfig", "StudyEval", "TrainConfig", "WarmupConfig",
           "build_train_config", "load_study_config", "load_train_config", "load_yaml", "method_preset",
           "method_presets", "resolve_method"]
