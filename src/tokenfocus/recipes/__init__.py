"""Recipes: train, study, warm-up, evaluate, evidence, analyze. Each composes the components (models, signals,
policies, losses, tasks, diagnostics, report) through a config and an integration; none holds maths."""
