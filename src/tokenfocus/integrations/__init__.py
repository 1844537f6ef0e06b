"""Trainer integrations: framework glue only (TRL now: ``trl.TokenFocusGRPOTrainer``; verl to come).

``token_weights.TokenWeighting`` is how per-token weights enter any trainer's loss; ``callbacks`` holds the
transformers callbacks of a run (namespaced metrics lines, graceful stop on SIGTERM)."""
