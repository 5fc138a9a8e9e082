"""Using a finished run: predict on a folder (CSV vs the model's own forward), evaluate on any dataset (the
record's numbers again on its own split), prior correction in closed form, and the refusals."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from da.config import RunConfig
from da.data.folder import load_rgb
from da.deploy import load_run
from da.scripts.evaluate import main as evaluate_main
from da.scripts.predict import main as predict_main
from da.train import run_experiment


def tiny_cfg(root, out, **kw) -> RunConfig:
    base = dict(data_root=str(root), out=str(out), weights="none", img_size=32, batch_size=8, epochs=2,
                max_steps_per_epoch=3, num_workers=0, progress=False, eval_batch_size=64, val_fraction=0.25,
                stages=1, method="source_only")
    base.update(kw)
    return RunConfig(**base)


@pytest.fixture(scope="module")
def finished(tiny_root, tmp_path_factory) -> Path:
    """A finished AID -> RSSCN7 run with a target-prior estimate (so prior correction has something to use)."""
    out = tmp_path_factory.mktemp("runs")
    return Path(run_experiment(tiny_cfg(tiny_root, out, prior="em", adapt_from_epoch=1))).parent


def image_folder(tiny_root: Path, dest: Path) -> list[str]:
    """Nested copies of a few RSSCN7 images, a broken one and a non-image; returns the readable ones."""
    readable = []
    for i, src in enumerate(sorted((tiny_root / "RSSCN7").rglob("*.jpg"))[::5]):
        rel = Path(f"site{i % 2}") / ("deeper" if i % 3 == 0 else "") / f"img{i}.jpg"
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest / rel)
        readable.append(str(rel))
    (dest / "site0" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    (dest / "notes.txt").write_text("not an image")
    return sorted(readable)


def own_forward(run, folder: Path, rel: str) -> torch.Tensor:
    with torch.no_grad():
        return run.model(run.transform()(load_rgb(folder / rel)).unsqueeze(0))[0][0]


def test_predict_csv_matches_the_models_own_forward(finished, tiny_root, tmp_path, capsys):
    readable = image_folder(tiny_root, tmp_path / "imgs")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image\(s\) .*site0/broken.jpg"):
        rc = predict_main(["--run", str(finished), "--images", str(tmp_path / "imgs"), "--out",
                           str(tmp_path / "p.csv"), "--batch-size", "3"])
    assert rc == 0 and "skipped" in capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    run = load_run(finished)
    assert [r["path"] for r in rows] == readable  # every depth, sorted, the broken file and the .txt left out
    assert list(rows[0]) == ["path", "predicted"] + [f"p_{c}" for c in run.classes]
    for row in rows:
        probs = own_forward(run, tmp_path / "imgs", row["path"]).softmax(0)
        got = torch.tensor([float(row[f"p_{c}"]) for c in run.classes])
        assert torch.allclose(got, probs, atol=2e-6) and row["predicted"] == run.classes[int(probs.argmax())]


def test_prior_correction_is_the_runs_calibrated_posterior_times_the_prior_ratio(finished, tiny_root, tmp_path):
    image_folder(tiny_root, tmp_path / "imgs")
    with pytest.warns(UserWarning):
        assert predict_main(["--run", str(finished), "--images", str(tmp_path / "imgs"), "--out",
                             str(tmp_path / "p.csv"), "--prior-correction"]) == 0
    run = load_run(finished)
    prior = run.record["prior"]
    assert prior["estimator"] == "em" and len(prior["bias"]) == len(run.classes)
    for row in csv.DictReader((tmp_path / "p.csv").open()):
        logits = own_forward(run, tmp_path / "imgs", row["path"]).double().numpy()
        cal = np.exp(logits / prior["temperature"] + np.array(prior["bias"]))
        cal /= cal.sum()
        expected = cal * np.array(prior["estimate"]) / np.array(prior["source_prior"])
        expected /= expected.sum()
        got = np.array([float(row[f"p_{c}"]) for c in run.classes])
        # the CSV's batched float32 forward and this single-image one sum in different orders (CPU-dependent
        # kernels), and 1 / temperature amplifies that: a few 1e-6 on some CPUs, beside the CSV's 5e-7 rounding
        assert np.allclose(got, expected, atol=2e-5)
        assert row["predicted"] == run.classes[int(expected.argmax())]
        assert row["predicted_uncorrected"] == run.classes[int(logits.argmax())]


def test_evaluate_reproduces_the_record_and_scores_another_dataset(finished, tiny_root, tmp_path):
    record = json.loads((finished / "record.json").read_text())
    assert evaluate_main(["--run", str(finished), "--dataset", "RSSCN7", "--split", "test",
                          "--data-root", str(tiny_root)]) == 0
    again = json.loads((finished / "evaluations" / "RSSCN7-test.json").read_text())
    for key in ("accuracy", "macro_f1", "confusion", "n"):
        assert again["metrics"][key] == record["target_test"][key], key
    # the model adapted to RSSCN7 scored on AID through the built-in AID -> RSSCN7 map
    assert evaluate_main(["--run", str(finished), "--dataset", "AID", "--data-root", str(tiny_root),
                          "--out", str(tmp_path / "aid.json")]) == 0
    aid = json.loads((tmp_path / "aid.json").read_text())
    mapped = [s for group in aid["class_map"].values() for s in group]
    assert aid["metrics"]["n"] == 4 * len(mapped) and sum(map(sum, aid["metrics"]["confusion"])) == 4 * len(mapped)
    assert aid["data"]["images_per_class"] == {c: 4 for c in sorted(mapped, key=aid["data"]["images_per_class"].get)}
    # a folder whose class folders carry the run's class names needs no map
    shutil.copytree(tiny_root / "RSSCN7", tmp_path / "mine")
    assert evaluate_main(["--run", str(finished), "--dataset", f"folder:{tmp_path / 'mine'}", "--out",
                          str(tmp_path / "mine.json")]) == 0
    mine = json.loads((tmp_path / "mine.json").read_text())
    assert mine["metrics"]["n"] == 56 and mine["class_map"] == {c: [c] for c in record["classes"]}


def test_refusals_name_the_file_and_what_to_do(finished, tiny_root, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert predict_main(["--run", str(finished), "--images", str(tmp_path / "empty")]) == 2
    assert "holds no image" in capsys.readouterr().err
    assert predict_main(["--run", str(tmp_path / "nope"), "--images", str(tmp_path / "empty")]) == 2
    assert "does not exist" in capsys.readouterr().err
    unfinished = tmp_path / "unfinished"
    shutil.copytree(finished, unfinished)
    (unfinished / "DONE").unlink()
    assert evaluate_main(["--run", str(unfinished), "--dataset", "RSSCN7", "--data-root", str(tiny_root)]) == 2
    assert "has not finished" in capsys.readouterr().err
    other = tmp_path / "other"
    shutil.copytree(finished, other)
    payload = torch.load(other / "best_model.pt", weights_only=True)
    payload["model"] = {k: v for k, v in payload["model"].items() if not k.startswith("head")}  # another model
    torch.save(payload, other / "best_model.pt")
    assert evaluate_main(["--run", str(other), "--dataset", "RSSCN7", "--data-root", str(tiny_root)]) == 2
    assert "does not fit the run's model" in capsys.readouterr().err
    no_prior = tmp_path / "no_prior"
    shutil.copytree(finished, no_prior)
    rec = json.loads((no_prior / "record.json").read_text())
    rec["prior"] = None
    (no_prior / "record.json").write_text(json.dumps(rec))
    image_folder(tiny_root, tmp_path / "imgs")
    with pytest.warns(UserWarning):
        assert predict_main(["--run", str(no_prior), "--images", str(tmp_path / "imgs"), "--prior-correction"]) == 2
    assert "no target-prior estimate (it ran without --prior)" in capsys.readouterr().err
    assert not (no_prior / "predictions").exists()


def test_prediction_csv_cells_that_a_spreadsheet_would_run_are_escaped(tmp_path):
    from da.deploy.predict import write_csv

    rows = [{"path": "=HYPERLINK(\"http://x\").jpg", "predicted": "bField", "p_a": 0.25},
            {"path": "+1.jpg", "predicted": "@cls", "p_a": -0.0},
            {"path": "site/-x.jpg", "predicted": "aGrass", "p_a": 0.75}]
    write_csv(rows, tmp_path / "p.csv")
    got = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert [r["path"] for r in got] == ["'=HYPERLINK(\"http://x\").jpg", "'+1.jpg", "site/-x.jpg"]
    assert [r["predicted"] for r in got] == ["bField", "'@cls", "aGrass"]
    assert [float(r["p_a"]) for r in got] == [0.25, -0.0, 0.75]  # numbers are no formulas


def test_evaluate_on_the_runs_split_refuses_other_images(finished, tiny_root, tmp_path, capsys):
    """--split test must score the images the run was tested on: added images and replaced contents are refused
    (it used to score 35 images where the run's test split had 28, exit 0)."""
    data = tmp_path / "data"
    shutil.copytree(tiny_root, data)
    assert evaluate_main(["--run", str(finished), "--dataset", "RSSCN7", "--split", "test", "--data-root", str(data),
                          "--out", str(tmp_path / "same.json")]) == 0  # a copy of the same files is the same data
    img = sorted((data / "RSSCN7" / "bField").iterdir())[0]
    blob = img.read_bytes()
    img.write_bytes(blob[:-3] + bytes([blob[-3] ^ 1]) + blob[-2:])  # one byte of one image
    assert evaluate_main(["--run", str(finished), "--dataset", "RSSCN7", "--split", "test", "--data-root",
                          str(data)]) == 2
    assert "are not the files run" in capsys.readouterr().err
    img.write_bytes(blob)
    shutil.copyfile(img, img.with_name("added.jpg"))
    assert evaluate_main(["--run", str(finished), "--dataset", "RSSCN7", "--split", "test", "--data-root",
                          str(data)]) == 2
    assert "images were added, removed or relabelled" in capsys.readouterr().err


def test_predict_never_writes_among_its_inputs_and_default_names_do_not_collide(finished, tiny_root, tmp_path,
                                                                                capsys):
    imgs = tmp_path / "imgs"
    readable = image_folder(tiny_root, imgs)
    first = imgs / readable[0]
    before = first.read_bytes()
    assert predict_main(["--run", str(finished), "--images", str(imgs), "--out", str(first)]) == 2
    assert "lies inside --images" in capsys.readouterr().err and first.read_bytes() == before
    (tmp_path / "notes.txt").write_text("keep me")
    assert predict_main(["--run", str(finished), "--images", str(imgs), "--out", str(tmp_path / "notes.txt")]) == 2
    assert "is not a CSV file" in capsys.readouterr().err and (tmp_path / "notes.txt").read_text() == "keep me"
    # two folders named alike write two files
    other = tmp_path / "elsewhere" / "imgs"
    image_folder(tiny_root, other)
    home = tmp_path / "home"
    shutil.copytree(finished, home)
    with pytest.warns(UserWarning):
        for folder in (imgs, other):
            assert predict_main(["--run", str(home), "--images", str(folder)]) == 0
    written = sorted(p.name for p in (home / "predictions").iterdir())
    assert len(written) == 2 and all(n.startswith("imgs-") and n.endswith(".csv") for n in written)
