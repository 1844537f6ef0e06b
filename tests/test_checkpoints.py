"""Checkpoint files (tokenfocus/checkpoints.py): a manifest catches missing, truncated and altered files;
resume takes the newest complete checkpoint; broken ones are set aside, never deleted; rotation keeps two."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from tokenfocus.checkpoints import (BROKEN, MANIFEST, checkpoint_dirs, checkpoint_problems,
                                    latest_complete_checkpoint, publish, rotate, set_aside, write_manifest)


def make_checkpoint(run_dir, step, manifest=True):
    path = run_dir / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file({"w": torch.full((64,), float(step))}, str(path / "model.safetensors"))
    torch.save({"state": {0: torch.ones(8) * step}}, path / "optimizer.pt")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if manifest:
        write_manifest(path)
    return path


@pytest.mark.parametrize("damage, expected", [
    (lambda c: (c / "optimizer.pt").unlink(), "optimizer.pt is missing"),
    (lambda c: (c / "optimizer.pt").write_bytes((c / "optimizer.pt").read_bytes()[:100]), "optimizer.pt has 100 bytes"),
    (lambda c: (c / "trainer_state.json").write_text('{"global_step": 40}'), "trainer_state.json has"),
    (lambda c: (c / "model.safetensors").write_bytes(bytes(len((c / "model.safetensors").read_bytes()))),
     "model.safetensors differs from what was written"),
    (lambda c: (c / MANIFEST).write_text("{"), "unreadable"),
])
def test_the_manifest_catches_every_kind_of_damage(tmp_path, damage, expected):
    checkpoint = make_checkpoint(tmp_path, 4)
    assert checkpoint_problems(checkpoint) == []
    damage(checkpoint)
    problems = checkpoint_problems(checkpoint)
    assert any(expected in p for p in problems), problems


def test_checkpoints_without_a_manifest_must_load(tmp_path):
    assert checkpoint_problems(make_checkpoint(tmp_path, 1, manifest=False)) == []
    partial = tmp_path / "checkpoint-2"
    partial.mkdir()
    (partial / "config.json").write_text("{}")  # a save killed after its first file
    assert "the save was interrupted" in checkpoint_problems(partial)[0]
    torn = make_checkpoint(tmp_path, 3, manifest=False)
    (torn / "optimizer.pt").write_bytes((torn / "optimizer.pt").read_bytes()[:50])
    assert any("optimizer.pt does not load" in p for p in checkpoint_problems(torn))


def test_resume_takes_the_newest_complete_checkpoint_and_names_what_it_skipped(tmp_path):
    for step in (2, 4, 6):
        make_checkpoint(tmp_path, step)
    (tmp_path / "checkpoint-6" / "optimizer.pt").unlink()
    (tmp_path / "checkpoint-8").mkdir()  # killed mid-save by an older version: in place, partial
    chosen, skipped = latest_complete_checkpoint(tmp_path)
    assert chosen.name == "checkpoint-4"
    assert [(c.name, bool(p)) for c, p in skipped] == [("checkpoint-8", True), ("checkpoint-6", True)]
    moved = set_aside(skipped[0][0])
    assert moved.parent == tmp_path / BROKEN and moved.is_dir()  # kept, out of the way
    assert [c.name for c in checkpoint_dirs(tmp_path)] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    empty, _ = latest_complete_checkpoint(tmp_path / "nothing")
    assert empty is None


def test_publish_replaces_whole_and_rotation_keeps_at_least_two(tmp_path):
    staging = tmp_path / ".staging"
    old = make_checkpoint(tmp_path, 5)
    new = make_checkpoint(staging, 5)
    (new / "marker").write_text("new")
    write_manifest(new)
    publish(new, old)
    assert (tmp_path / "checkpoint-5" / "marker").read_text() == "new" and not new.exists()
    assert not list(staging.glob("replaced-*"))
    for step in (6, 7, 8):
        make_checkpoint(tmp_path, step)
    assert [c.name for c in rotate(tmp_path, keep=1)] == ["checkpoint-5", "checkpoint-6"]
    assert [c.name for c in checkpoint_dirs(tmp_path)] == ["checkpoint-7", "checkpoint-8"]
    assert rotate(tmp_path, keep=None) == []
