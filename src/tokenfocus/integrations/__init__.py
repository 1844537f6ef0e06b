"""Trainer integrations (TRL; verl to come)."""
