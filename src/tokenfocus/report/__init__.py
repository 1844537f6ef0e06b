"""Rendering run directories to self-contained HTML. Imports nothing from training."""
