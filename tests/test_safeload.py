"""One loader for every YAML/JSON file a user hands the project: repeated keys refused, alias bombs refused,
size capped; and every reader of such files uses it."""

import time

import pytest

from da.utils import safeload
from da.utils.safeload import load_file, load_json_text, load_yaml_text

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))  # 9^9 nodes in 1 KB


def test_repeated_keys_are_refused_with_the_file_and_lines():
    with pytest.raises(ValueError, match=r"s.yaml: key\(s\) lr given more than once \(lines 2 and 4"):
        load_yaml_text("base:\n  lr: 0.1\n  epochs: 4\n  lr: 0.2\n", "s.yaml")
    with pytest.raises(ValueError, match=r"c.json: key\(s\) lr given more than once"):
        load_json_text('{"lr": 0.1, "lr": 0.2}', "c.json")
    assert load_yaml_text("a: {lr: 1}\nb: {lr: 2}\n", "ok") == {"a": {"lr": 1}, "b": {"lr": 2}}  # other mappings


def test_an_alias_bomb_is_refused_at_once_and_plain_aliases_still_work():
    t = time.perf_counter()
    with pytest.raises(ValueError, match="expands to more than 200,000 nodes"):
        load_yaml_text(BOMB, "bomb.yaml")
    assert time.perf_counter() - t < 2 and len(BOMB) < 1100
    assert load_yaml_text("x: &k {p: 1}\ny: *k\n", "ok") == {"x": {"p": 1}, "y": {"p": 1}}


def test_size_cap_unreadable_and_invalid_files(tmp_path, monkeypatch):
    big = tmp_path / "big.yaml"
    big.write_text("a: 1\n" * 100)
    monkeypatch.setattr(safeload, "MAX_BYTES", 100)
    with pytest.raises(ValueError, match=r"sweep .*big.yaml: 500 bytes, more than the 100"):
        load_file(big, "sweep", max_bytes=safeload.MAX_BYTES)
    with pytest.raises(ValueError, match="cannot read it"):
        load_file(tmp_path / "missing.yaml", "sweep")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        load_file(tmp_path / "bad.json")


def test_every_reader_of_user_files_refuses_a_repeated_key(tmp_path):
    from da.config import read_config_file
    from da.hpo.study import load_study_spec
    from da.launch import load_sweep
    from da.launch.submit import load_profile

    files = {"config.yaml": ("epochs: 2\nepochs: 3\n", read_config_file),
             "sweep.yaml": ("seeds: [0]\nseeds: [1]\n", load_sweep),
             "profile.yaml": ("partition: a\npartition: b\n", load_profile),
             "study.yaml": ("n_trials: 2\nn_trials: 3\nspace: {lr: {type: loguniform, low: 0.001, high: 0.01}}\n",
                            load_study_spec)}
    for name, (text, reader) in files.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ValueError, match=rf"{path}: key\(s\) \w+ given more than once"):
            reader(path)
    bomb = tmp_path / "sweep_bomb.yaml"
    bomb.write_text(BOMB)
    with pytest.raises(ValueError, match="expands to more than"):
        load_sweep(bomb)


def test_names_that_reach_an_sbatch_script_refuse_control_characters(tmp_path):
    from da.hpo.study import load_study_spec
    from da.launch import load_sweep

    study = tmp_path / "s.yaml"
    study.write_text('name: "ok\\n#SBATCH --wrap=evil"\nn_trials: 2\n'
                     "space: {lr: {type: loguniform, low: 0.001, high: 0.01}}\n")
    with pytest.raises(ValueError, match=r"s.yaml: name holds a control character .*one plain line"):
        load_study_spec(study)
    sweep = tmp_path / "a\tb.yaml"  # a file name is a sweep's name, and its Slurm job's
    sweep.write_text("seeds: [0]\n")
    with pytest.raises(ValueError, match="its file name holds a control character"):
        load_sweep(sweep)


def test_written_json_is_standard_json_with_null_for_non_finite_numbers(tmp_path):
    """NaN and Infinity are not JSON: a record holding one (an AP of a class without test boxes) was refused
    whole by strict readers; they are written as null."""
    import json

    import numpy as np

    from da.utils.io import atomic_write_json

    path = atomic_write_json(tmp_path / "r.json", {"ap": {"bridge": float("nan"), "ship": 0.5},
                                                   "scores": (1.0, float("inf"), np.float64("-inf")), "n": 3})

    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    assert json.loads(path.read_text(), parse_constant=refuse) == {"ap": {"bridge": None, "ship": 0.5},
                                                                   "scores": [1.0, None, None], "n": 3}
