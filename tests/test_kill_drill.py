"""The kill drill's own checks (experiments/kill_drill.py): what it counts as damaged, a cut journal line, and
that the comparison of a detection run leaves out wall-clock times only."""

from __future__ import annotations

import importlib.util
import json

import torch

from conftest import REPO


def _drill():
    spec = importlib.util.spec_from_file_location("kill_drill", REPO / "experiments" / "kill_drill.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_damaged_files_and_cut_journal_lines(tmp_path):
    drill = _drill()
    torch.save({"a": torch.ones(2)}, tmp_path / "good.pt")
    (tmp_path / "bad.pt").write_bytes(b"PK\x03\x04 cut")
    (tmp_path / "record.json").write_text('{"epochs": [1, 2')
    (tmp_path / "ok.json").write_text("{}")
    journal = tmp_path / "studies" / "s" / "journal.log"
    journal.parent.mkdir(parents=True)
    journal.write_text('{"op_code": 0}\n{"op_code": 5, "worker')
    bad = drill.damaged_files(tmp_path)
    assert sorted(b.split(" ")[0] for b in bad) == ["bad.pt", "record.json", "studies/s/journal.log"]
    assert drill.cut_journal_lines(tmp_path) == 1
    journal.write_text('{"op_code": 0}\n')
    assert drill.cut_journal_lines(tmp_path) == 0 and len(drill.damaged_files(tmp_path)) == 2


def test_a_detection_outcome_ignores_timings_only(tmp_path):
    drill = _drill()
    record = tmp_path / "record.json"
    rec = {"history": [{"epoch": 1, "train": {"loss": 1.0}, "val_map": 0.2, "train_s": 1.5, "train_images_per_s": 4.0}],
           "val": {"nms_0.5": {"map": 0.2}}, "test": {"nms_0.5": {"map": 0.1}}, "selected_epoch": 1}
    record.write_text(json.dumps(rec))
    first = drill.outcome("detection", tmp_path, f"{record}\n")
    rec["history"][0].update(train_s=30.0, train_images_per_s=0.2)
    record.write_text(json.dumps(rec))
    assert drill.outcome("detection", tmp_path, f"{record}\n") == first
    rec["history"][0]["val_map"] = 0.21
    record.write_text(json.dumps(rec))
    assert drill.outcome("detection", tmp_path, f"{record}\n") != first
    assert drill.STUDY.startswith("name: drill") and drill.command("hpo", tmp_path / "runs", "D")[-1] == "--worker"
