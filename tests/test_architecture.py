"""The layers of docs/ARCHITECTURE.md hold (import-linter contracts in pyproject.toml), and a wrong import breaks
them: a component importing a recipe, the report importing a policy, a signal importing TRL."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"


def lint(package_parent: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if package_parent is not None:  # analyse a modified copy of the package instead of the installed one
        env["PYTHONPATH"] = f"{package_parent}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return subprocess.run([sys.executable, "-c", LINT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_import_contracts_hold():
    result = lint()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout, result.stdout


@pytest.mark.parametrize("module, wrong_import, importer, imported", [
    ("policies/subsets.py", "from ..recipes import train", "tokenfocus.policies.subsets", "tokenfocus.recipes.train"),
    ("report/study_report.py", "from ..policies import apply_policy", "tokenfocus.report.study_report",
     "tokenfocus.policies"),
    ("signals/engine.py", "import trl", "tokenfocus.signals.engine", "trl"),
    ("config/train.py", "from ..integrations import trl", "tokenfocus.config.train", "tokenfocus.integrations.trl"),
])
def test_a_wrong_import_breaks_a_contract(tmp_path, module, wrong_import, importer, imported):
    copy = tmp_path / "tokenfocus"
    shutil.copytree(ROOT / "src" / "tokenfocus", copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / module
    target.write_text(target.read_text() + f"\n{wrong_import}  # deliberate: the contracts must catch this\n")
    result = lint(tmp_path)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout and importer in result.stdout and imported in result.stdout, result.stdout
