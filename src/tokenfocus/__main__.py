"""`python -m tokenfocus`."""

from .cli import app

app()
