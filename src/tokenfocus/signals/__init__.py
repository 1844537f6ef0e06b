"""Per-token signals: one file per signal, registered in ``SIGNALS`` with what they need and cost."""

from . import (attention_entropy, attention_mass, counterfactual, critical, function_token, logprobs,  # noqa: F401
               position, predictive_entropy, random_signal, sink_score, teacher)  # (registers)
from .counterfactual import (COUNTERFACTUALS, ROLE_OF, Context, counterfactual_needs, counterfactual_scores,
                             required_roles)
from .engine import compute_signals, forward_capture
from .plan import AttentionPlan, SignalPass, SignalSource, attention_plan
from .registry import SIGNALS, SignalInfo, SignalSpec, parse_signal_spec, parse_signal_specs, register_signal

__all__ = [
    "COUNTERFACTUALS",
    "ROLE_OF",
    "SIGNALS",
    "Context",
    "AttentionPlan",
    "SignalInfo",
    "SignalPass",
    "SignalSource",
    "SignalSpec",
    "attention_plan",
    "compute_signals",
    "counterfactual_needs",
    "counterfactual_scores",
    "forward_capture",
    "parse_signal_spec",
    "parse_signal_specs",
    "register_signal",
    "required_roles",
]
