"""Hyperparameter search without target labels (da.hpo): the search space and study files, seeded
reproducibility, workers sharing one journal (concurrently, after a SIGKILL, with failures), the study
table, and da-hpo end to end (in-process on tiny data; on the local Slurm, marked slurm).

Most tests run trials through a fake ``run_fn`` that writes a record with made-up scores at once, so that
they test the study machinery, not training; the CLI and Slurm tests run real tiny trials.
"""

import json
import math
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from da.config import RunConfig
from da.hpo import load_study_spec, open_study, parse_space, study_dir
from da.hpo.report import status_text, trial_rows
from da.hpo.space import SpaceError
from da.hpo.study import JOURNAL_FILE, load_study_dir, rank_average
from da.hpo.worker import run_worker
from da.launch import load_sweep
from da.records import SCHEMA_VERSION
from da.results.study import render_study_markdown, study_summary, write_study_table
from da.rundir import run_dir_for
from da.utils.io import atomic_write_json

TINY = dict(weights="none", img_size=32, batch_size=8, epochs=2, stage1_epochs=1, max_steps_per_epoch=2,
            num_workers=0, val_fraction=0.25, eval_batch_size=64, compile_prefix=False)
SPACE = {"mcc_weight": {"type": "loguniform", "low": 0.1, "high": 3.0},
         "lr": {"type": "loguniform", "low": 3.0e-4, "high": 3.0e-3},
         "mcc_temperature": {"type": "uniform", "low": 1.5, "high": 4.0}}


def study_file(tmp_path, name="s", **top):
    data = {"base": {"method": "shot+mcc", "selection": "bnm", **TINY}, "space": SPACE, "objective": "bnm",
            "n_trials": 6, "seed": 0, "sampler": "tpe", **top}
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    return path


# ------------------------------------------------------------------------------------------ a fake run
def fake_scores(cfg: RunConfig) -> tuple[dict, float]:
    """Made-up validator scores of a config (bnm peaks near mcc_weight 1.3, lr 6e-4) and a target accuracy
    that peaks elsewhere (mcc_weight 0.5), so that the label-free choice and the oracle can differ."""
    bnm = 1 - (math.log(cfg.mcc_weight / 1.3)) ** 2 - (math.log10(cfg.lr) + 3.2) ** 2 - 0.01 * cfg.mcc_temperature
    acc = min(1.0, max(0.0, 0.8 - 0.1 * (math.log(cfg.mcc_weight / 0.5)) ** 2))
    return {"bnm": bnm, "im": -bnm, "source_acc": 0.5, "entropy": -0.1, "snd": 1.0, "class_ami": 0.1, "dev": -1.0}, acc


def write_fake_record(cfg: RunConfig, scores: dict, acc: float) -> Path:
    run_dir = run_dir_for(cfg, 2)
    record = {"schema_version": SCHEMA_VERSION, "config": cfg.to_dict(), "config_hash": cfg.config_hash(),
              "seed": cfg.seed, "git_commit": "test", "stage": 2, "selected_epoch": 2,
              "epochs": [{"epoch": 1, "scores": {k: v - 1 for k, v in scores.items()}},
                         {"epoch": 2, "scores": scores}],
              "target_test": {"accuracy": acc, "macro_f1": acc}, "source_val": {"accuracy": 0.5, "macro_f1": 0.5},
              "oracle": None, "wall_time_s": 0.0, "images_per_s": 0.0}
    return atomic_write_json(run_dir / "record.json", record)


class FakeRun:
    """A cheap stand-in for run_experiment: logs each call (pid, config hash), may wait, hang or fail."""

    def __init__(self, log: Path | None = None, sleep: float = 0.0, fail_when=None, results=None):
        self.log, self.sleep, self.fail_when, self.results = log, sleep, fail_when, results
        self.calls: list[RunConfig] = []

    def __call__(self, cfg: RunConfig) -> Path:
        self.calls.append(cfg)
        if self.log:
            with open(self.log, "a") as f:
                f.write(f"{os.getpid()} {cfg.config_hash()}\n")
        time.sleep(self.sleep)
        if self.fail_when and self.fail_when(cfg, len(self.calls)):
            raise ValueError(f"boom in call {len(self.calls)}")
        scores, acc = fake_scores(cfg) if self.results is None else self.results[len(self.calls) - 1]
        return write_fake_record(cfg, scores, acc)


def params_of(out, name="s") -> list[dict]:
    study = load_study_dir(study_dir(out, name))
    return [t.params for t in sorted(study.get_trials(), key=lambda t: t.number)]


# ------------------------------------------------------------------------------------------ search space
def test_space_parses_each_type_in_file_order():
    space = parse_space({"lr": {"type": "loguniform", "low": 1.0e-4, "high": 1.0e-2},
                         "shot_weight": {"type": "uniform", "low": 0, "high": 1, "step": 0.25},
                         "bottleneck_dim": {"type": "int", "low": 128, "high": 512, "step": 128},
                         "cls_loss": {"type": "categorical", "choices": ["ce", "focal"]},
                         "freeze_bn": {"type": "categorical", "choices": [True, False]}}, "space.yaml")
    assert space.names == ["lr", "shot_weight", "bottleneck_dim", "cls_loss", "freeze_bn"]
    lr, shot, dim, loss, bn = space.params
    assert (lr.low, lr.high) == (1.0e-4, 1.0e-2) and shot.low == 0.0 and isinstance(shot.low, float)
    assert shot.contains(0.75) and not shot.contains(0.3) and not shot.contains(1.5)
    assert dim.contains(384) and not dim.contains(300) and not dim.contains(384.0)
    assert loss.contains("focal") and not loss.contains("ohem")
    assert bn.contains(False) and not bn.contains(0)  # 0 == False in Python, but it is no true/false value


@pytest.mark.parametrize("entry,message", [
    ({"methd": {"type": "uniform", "low": 0, "high": 1}}, "methd: unknown RunConfig field"),
    ({"data_root": {"type": "categorical", "choices": ["a", "b"]}}, "data_root: cannot be searched"),
    ({"lr": {"type": "uniform", "low": 0.01, "high": 0.001}}, r"lr: low \(0.01\) must be below high \(0.001\)"),
    ({"lr": {"type": "uniform", "low": 0.01, "high": 0.01}}, r"lr: low \(0.01\) must be below high"),
    ({"lr": {"type": "loguniform", "low": 0.0, "high": 0.1}}, "lr: loguniform needs low > 0, got 0.0"),
    ({"bottleneck_dim": {"type": "int", "low": 64.5, "high": 512}}, "bottleneck_dim: type int needs integer bounds"),
    ({"cls_loss": {"type": "categorical", "choices": []}}, "cls_loss: choices must be a non-empty list"),
    ({"cls_loss": {"type": "categorical", "choices": ["ce"]}}, "cls_loss: a single choice is no search"),
    ({"bottleneck_dim": {"type": "uniform", "low": 64, "high": 512}},
     r"bottleneck_dim: type uniform does not match the field's type \(an integer\); use type: int"),
    ({"method": {"type": "categorical", "choices": ["coral", 3]}},
     r"method: choice 3 does not match the field's type \(text\)"),
    ({"freeze_bn": {"type": "uniform", "low": 0, "high": 1}}, r"freeze_bn: type uniform does not match the field's "
                                                              r"type \(true or false\)"),
    ({"lr": {"type": "gaussian", "low": 0, "high": 1}}, "lr: type 'gaussian' is not valid"),
    ({"lr": {"type": "loguniform", "low": 1.0e-4, "high": 1.0e-2, "step": 0.1}},
     "lr: key.* step do not belong to type loguniform"),
    ({"lr": {"type": "loguniform", "low": "1e-4", "high": 1.0e-2}}, "lr: low must be a finite number.*1.0e-3"),
    ({"rank_validators": {"type": "categorical", "choices": ["im"]}}, "rank_validators: a list field cannot be searched"),
])
def test_space_errors_name_the_file_the_key_and_the_problem(entry, message):
    with pytest.raises(SpaceError, match=f"^study x.yaml, space: {message}"):
        parse_space(entry, "study x.yaml, space")


def test_study_file_errors_name_the_file_and_key(tmp_path):
    cases = [({"objective": "accuracy"}, "objective 'accuracy' is not valid"),
             ({"objective": "last"}, "objective 'last' is no score of a configuration"),
             ({"sampler": "cmaes"}, "sampler 'cmaes' is not valid"),
             ({"n_trials": 0}, "n_trials must be an integer >= 1"),
             ({"budget": 3}, r"unknown key\(s\) budget"),
             ({"base": {"method": "shot"}}, "space.mcc_weight: changes nothing in method 'shot'"),
             ({"base": {"method": "shot+mcc", "out": "x"}}, "base.out: give it on the command line"),
             ({"base": {"method": "shot+mcc", "lr": 1.0}}, r"space.lr: the base config's value 1.0 lies outside"),
             ({"space": {**SPACE, "mcc_temperature": {"type": "uniform", "low": 0.0, "high": 4.0}}},
              "space.mcc_temperature: the value 0.0 cannot run: --mcc-temperature must be > 0"),
             ({"space": {"seed": {"type": "int", "low": 0, "high": 3}}}, "space: seed cannot be searched"),
             ({"rank_validators": ["im", "snd"]}, "rank_validators applies to objective rank only")]
    for top, message in cases:
        path = study_file(tmp_path, **top)
        with pytest.raises(ValueError, match=message) as err:
            load_study_spec(path)
        assert str(path) in str(err.value)
    # enqueue_default false allows a default outside the space
    assert load_study_spec(study_file(tmp_path, base={"method": "shot+mcc", "lr": 1.0}, enqueue_default=False))


def test_shipped_study_starts_from_the_gap_sweeps_shot_mcc_run():
    spec = load_study_spec("shot_mcc_rsscn7")
    gap = [c for c in load_sweep("gap").configs() if c.method == "shot+mcc" and c.seed == 0]
    assert spec.base.config_hash() == gap[0].config_hash()  # trial 0 is that very run
    assert (spec.n_trials, spec.seed, spec.sampler, spec.objective, spec.enqueue_default) == (24, 0, "tpe", "bnm", True)
    assert spec.objective == gap[0].selection
    assert set(spec.space.names) == {"mcc_weight", "shot_weight", "lr", "mcc_temperature"}
    assert all(p.contains(v) for p, v in zip(spec.space.params, spec.default_params().values()))


# ------------------------------------------------------------------------------------------ reproducibility
def test_same_seed_same_trials_also_across_sequential_workers(tmp_path):
    k = 12  # past TPE's 10 random start-up trials, so its model-based proposals are compared too
    runs = {}
    for label, seed, chunks in (("one", 0, [k]), ("two", 0, [5, k - 5]), ("other", 1, [k])):
        spec = load_study_spec(study_file(tmp_path, n_trials=k, seed=seed))
        for n in chunks:  # each chunk a fresh worker, as after a requeue
            run_worker(spec, tmp_path / label, run_fn=FakeRun(), max_trials=n)
        runs[label] = params_of(tmp_path / label)
    assert len(runs["one"]) == k
    assert runs["one"][0] == spec.default_params()  # trial 0: the default configuration
    assert runs["one"] == runs["two"]
    assert runs["one"][1:] != runs["other"][1:] and runs["other"][0] == runs["one"][0]
    assert len({json.dumps(p, sort_keys=True) for p in runs["one"]}) == k  # a fresh worker repeats no trial
    random_a = load_study_spec(study_file(tmp_path, n_trials=4, sampler="random", name="r"))
    for label in ("ra", "rb"):
        run_worker(random_a, tmp_path / label, run_fn=FakeRun())
    assert params_of(tmp_path / "ra", "r") == params_of(tmp_path / "rb", "r")


def test_a_journal_cut_mid_line_is_repaired_not_appended_to(tmp_path):
    """A worker killed in the middle of an append leaves half a line; the next worker used to glue its line to
    it, after which no worker, --status or table could read the study (every trial lost)."""
    spec = load_study_spec(study_file(tmp_path, n_trials=3))
    run_worker(spec, tmp_path / "o", run_fn=FakeRun(), max_trials=2)
    journal = study_dir(tmp_path / "o", "s") / JOURNAL_FILE
    intact = journal.read_bytes()
    journal.write_bytes(intact + b'{"op_code": 5, "worker_id": "x", "trial_id": 1, "param_na')  # killed mid-write
    with pytest.warns(UserWarning, match=r"journal.log: its last line was cut \(\d+ bytes"):
        run_worker(spec, tmp_path / "o", run_fn=FakeRun())  # the third trial
    assert journal.read_bytes().startswith(intact) and journal.read_bytes().endswith(b"\n")
    assert len(params_of(tmp_path / "o")) == 3


# ------------------------------------------------------------------------------------------ workers
# Worker processes are forked: they share nothing with the test but the journal and the run folders, and
# a fork starts at once where a fresh interpreter would spend seconds importing torch
FORK = multiprocessing.get_context("fork")


def start_worker(*argv) -> multiprocessing.Process:
    proc = FORK.Process(target=_worker_process, args=([str(a) for a in argv],))
    proc.start()
    return proc


def _wait_for(predicate, timeout=120, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def test_two_concurrent_workers_lose_and_duplicate_nothing(tmp_path):
    path, out, log = study_file(tmp_path, n_trials=6), tmp_path / "runs", tmp_path / "calls.log"
    procs = [start_worker("concurrent", path, out, log, tmp_path / f"ready{i}", tmp_path) for i in range(2)]
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    calls = [line.split() for line in log.read_text().splitlines()]
    study = load_study_dir(study_dir(out, "s"))
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state.name == "COMPLETE" for t in trials)
    hashes = [t.user_attrs["config_hash"] for t in trials]
    assert sorted(h for _, h in calls) == sorted(hashes) and len(set(hashes)) == 6  # each trial ran exactly once
    assert len({pid for pid, _ in calls}) == 2  # both workers took trials
    assert all(t.value == pytest.approx(fake_scores(RunConfig.from_dict(
        json.loads((out / t.user_attrs["run_dir"] / "record.json").read_text())["config"]))[0]["bnm"]) for t in trials)


def test_trial_of_a_killed_worker_is_resumed_with_the_same_config(tmp_path):
    path, out = study_file(tmp_path, n_trials=3), tmp_path / "runs"
    marker = tmp_path / "hanging"
    proc = start_worker("hang", path, out, marker)
    try:
        _wait_for(marker.exists, what="the worker to start its first trial")
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # a dead node: no handler, no cleanup
        proc.join(timeout=60)
    assert proc.exitcode == -signal.SIGKILL
    killed_hash = marker.read_text().strip()
    spec = load_study_spec(path)
    study = open_study(spec, out)
    (t0,) = study.get_trials()
    assert t0.state.name == "RUNNING" and t0.user_attrs["config_hash"] == killed_hash
    assert "interrupted" in status_text("s", out)
    fake = FakeRun()
    assert run_worker(spec, out, run_fn=fake, max_trials=1) == [0]  # the abandoned trial first, not a new one
    assert fake.calls[0].config_hash() == killed_hash
    t0 = load_study_dir(study_dir(out, "s")).get_trials()[0]
    assert t0.state.name == "COMPLETE" and t0.user_attrs["attempts"] == 2 and t0.params == spec.default_params()
    assert run_worker(spec, out, run_fn=fake) == [1, 2]
    assert run_worker(spec, out, run_fn=fake) == []  # the budget is spent: a new worker does nothing


def test_failed_trial_is_recorded_with_its_error_and_failures_stop_a_worker(tmp_path):
    spec = load_study_spec(study_file(tmp_path, n_trials=4))
    out = tmp_path / "runs"
    handled = run_worker(spec, out, run_fn=FakeRun(fail_when=lambda cfg, call: call == 2))
    assert handled == [0, 1, 2, 3]
    trials = load_study_dir(study_dir(out, "s")).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert trials[1].user_attrs["error"] == "ValueError: boom in call 2" and "boom" in trials[1].user_attrs["traceback"]
    text = status_text("s", out)
    assert "3 done, 0 running, 0 interrupted (resumed by the next worker), 1 failed, 0 remaining" in text
    assert "error: ValueError: boom in call 2" in text
    # a setup that fails every run: the worker gives up after 3 in a row instead of spending the budget
    spec = load_study_spec(study_file(tmp_path, name="broken", n_trials=10))
    assert run_worker(spec, out, run_fn=FakeRun(fail_when=lambda cfg, call: True)) == [0, 1, 2]
    assert "0 done, 0 running, 0 interrupted (resumed by the next worker), 3 failed, 7 remaining" in \
        status_text("broken", out)


def test_continuing_a_study_keeps_it_and_refuses_another_definition(tmp_path):
    out = tmp_path / "runs"
    spec = load_study_spec(study_file(tmp_path, n_trials=2))
    run_worker(spec, out, run_fn=FakeRun())
    more = load_study_spec(study_file(tmp_path, n_trials=3))  # a larger budget continues the same study
    assert run_worker(more, out, run_fn=FakeRun()) == [2]
    assert len(params_of(out)) == 3
    changed = load_study_spec(study_file(tmp_path, n_trials=3, seed=5))
    with pytest.raises(ValueError, match=r"made from another definition \(it differs in: seed\)"):
        open_study(changed, out)


# ------------------------------------------------------------------------------------------ the study table
def test_study_table_against_hand_computed_values(tmp_path):
    out = tmp_path / "runs"
    bnm_acc = [(0.50, 0.700), (0.80, 0.725), (0.60, 0.800), None, (0.80, 0.650)]  # None: fails
    results = [(dict(fake_scores(RunConfig())[0], bnm=b), a) for b, a in (x or (0, 0) for x in bnm_acc)]
    spec = load_study_spec(study_file(tmp_path, n_trials=5))
    run_worker(spec, out, run_fn=FakeRun(results=results, fail_when=lambda cfg, call: call == 4), max_failures=5)
    summary = study_summary(study_dir(out, "s"))
    # trial 0 the default (70.0); choice: highest bnm, 0.80, the earlier of trials 1 and 4 (72.5); oracle: trial 2 (80.0)
    assert (summary["default"]["number"], summary["choice"]["number"], summary["oracle"]["number"]) == (0, 1, 2)
    assert (summary["complete"], summary["failed"]) == (4, 1)
    text = render_study_markdown(summary)
    assert "| bnm | 4 / 1 | 70.0 (trial 0) | 72.5 (trial 1) | +2.5 | 80.0 (trial 2) | +7.5 |" in text
    assert "ORACLE" in text and "| 3 |" in text and "failed: ValueError: boom in call 4" in text
    path = write_study_table(study_dir(out, "s"))
    assert path == study_dir(out, "s") / "results" / "study.md" and path.read_text() == text
    from da.scripts.tables import main as tables_main

    assert tables_main(["--study", str(study_dir(out, "s")), "--out", str(tmp_path / "results")]) == 0
    assert (tmp_path / "results" / "tables" / "study_s.md").read_text() == text
    # the records are found again under another runs folder (an archived copy), by run directory name
    archive = tmp_path / "archive"
    (out).rename(archive)
    (archive / "studies").rename(tmp_path / "studies")
    moved = study_summary(tmp_path / "studies" / "s", runs=archive)
    assert moved["oracle"]["target_acc"] == pytest.approx(80.0)


def test_rank_objective_ranks_trials_at_report_time(tmp_path):
    out = tmp_path / "runs"
    scores = [{"im": 1.0, "snd": 3.0}, {"im": 2.0, "snd": 1.0}, {"im": 3.0, "snd": 2.0}]
    # hand-computed ranks over the 3 trials, / 3: im 1/3, 2/3, 1; snd 1, 1/3, 2/3 -> means 2/3, 1/2, 5/6
    assert rank_average(scores, ["im", "snd"]) == pytest.approx([2 / 3, 1 / 2, 5 / 6])
    results = [(dict(fake_scores(RunConfig())[0], **s), a) for s, a in zip(scores, (0.7, 0.9, 0.6))]
    spec = load_study_spec(study_file(tmp_path, n_trials=3, objective="rank", rank_validators=["im", "snd"]))
    run_worker(spec, out, run_fn=FakeRun(results=results))
    study = load_study_dir(study_dir(out, "s"))
    # the sampler was told each trial's rank among those finished by then: 1/1, then im 1, snd 1/2 -> 3/4, ...
    assert [t.value for t in study.get_trials()] == pytest.approx([1.0, 0.75, 5 / 6])
    rows = trial_rows(study, study_dir(out, "s"))
    assert [r["objective"] for r in rows] == pytest.approx([2 / 3, 1 / 2, 5 / 6])
    summary = study_summary(study_dir(out, "s"))
    assert (summary["choice"]["number"], summary["oracle"]["number"]) == (2, 1)
    assert "| rank | 3 / 0 | 70.0 (trial 0) | 60.0 (trial 2) | -10.0 | 90.0 (trial 1) | +30.0 |" in \
        render_study_markdown(summary)


# ------------------------------------------------------------------------------------------ da-hpo
def test_da_hpo_runs_a_tiny_study_then_continues_it(tiny_root, tmp_path, capsys):
    from da.scripts.hpo import main

    path = study_file(tmp_path, n_trials=2, base={"method": "shot+mcc", "selection": "bnm", **TINY, "stages": 1,
                                                  "epochs": 1})
    common = ["--study", str(path), "--out", str(tmp_path / "runs"), "--data-root", str(tiny_root)]
    assert main(common + ["--cluster", "slurm", "--workers", "2", "--profile", "local", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "would submit 2 worker(s)" in text and "#SBATCH --array=0-1%2" in text and "--partition=debug" in text
    assert not (tmp_path / "runs").exists()  # a dry run creates nothing
    assert main(common + ["--cluster", "debug", "--workers", "1"]) == 0
    assert "submitted 1 worker(s)" in capsys.readouterr().out
    journal = study_dir(tmp_path / "runs", "s") / JOURNAL_FILE
    trials = load_study_dir(journal.parent).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    for t in trials:  # the objective is the run's own BNM score at its selected epoch
        rec = json.loads((tmp_path / "runs" / t.user_attrs["run_dir"] / "record.json").read_text())
        assert t.value == rec["epochs"][rec["selected_epoch"] - 1]["scores"]["bnm"]
        assert rec["config"]["mcc_weight"] == t.params["mcc_weight"] and rec["selection"] == "bnm"
    assert main(common + ["--status", "--table"]) == 0
    text = capsys.readouterr().out
    assert "trials: 2 done, 0 running, 0 interrupted (resumed by the next worker), 0 failed, 0 remaining" in text
    assert "best so far: trial" in text and (journal.parent / "results" / "study.md").exists()
    size = journal.stat().st_size
    assert main(common + ["--cluster", "debug", "--workers", "2"]) == 0  # the budget is spent: nothing to submit
    assert "submitted 0 worker(s)" in capsys.readouterr().out and journal.stat().st_size == size
    assert main(["--study", str(tmp_path / "nope.yaml"), "--status"]) == 2


# ------------------------------------------------------------------------------------------ local Slurm
@pytest.mark.slurm
def test_small_study_on_the_local_slurm(tiny_root, tmp_path):
    from test_slurm_local import _sinfo_problem

    from da.hpo.submit import submit_study

    problem = _sinfo_problem()
    if problem:
        pytest.skip(f"local Slurm not reachable: {problem}")
    spec = load_study_spec(study_file(tmp_path, n_trials=4))
    out = tmp_path / "runs"
    summary = submit_study(spec, out, str(tiny_root), workers=2, cluster="slurm", profile="local", wait=True)
    assert summary["submit"] == 2 and len(summary["jobs"]) == 2
    trials = load_study_dir(study_dir(out, "s")).get_trials()
    assert len(trials) == 4 and all(t.state.name == "COMPLETE" for t in trials)
    workers = {t.user_attrs["worker"].split(" job ")[1] for t in trials}
    assert workers <= set(summary["jobs"])
    assert trials[0].params == spec.default_params()
    for t in trials:
        rec = json.loads((out / t.user_attrs["run_dir"] / "record.json").read_text())
        assert rec["launch"]["slurm_array_job_id"] and t.value == rec["epochs"][rec["selected_epoch"] - 1]["scores"]["bnm"]
    assert write_study_table(study_dir(out, "s")).exists()


@pytest.mark.slurm
def test_preempted_worker_is_requeued_and_resumes_its_trial(tiny_root, tmp_path):
    from test_slurm_local import _sinfo_problem

    from da.hpo.submit import submit_study

    problem = _sinfo_problem()
    if problem:
        pytest.skip(f"local Slurm not reachable: {problem}")
    spec = load_study_spec(study_file(tmp_path, n_trials=1, base={"method": "shot+mcc", "selection": "bnm", **TINY,
                                                                  "stages": 1, "epochs": 12}))
    out = tmp_path / "runs"
    job = submit_study(spec, out, str(tiny_root), workers=1, cluster="slurm", profile="local")["job_objects"][0]
    run_dir = run_dir_for(spec.config_for(spec.default_params(), out=str(out)), 2)
    _wait_for(lambda: (run_dir / "checkpoint.pt").exists(), timeout=300, what="the first epoch checkpoint")
    job._interrupt()  # what Slurm's preemption/time-limit signal does: submitit calls checkpoint() and requeues
    job.result()
    (t0,) = load_study_dir(study_dir(out, "s")).get_trials()
    assert t0.state.name == "COMPLETE" and t0.user_attrs["attempts"] == 2 and t0.user_attrs["run_dir"] == run_dir.name
    rec = json.loads((run_dir / "record.json").read_text())
    assert rec["resumed"] >= 1 and rec["launch"]["slurm_restart_count"] >= 1  # resumed, not started over


# ------------------------------------------------------------------------------------------ worker processes
def _worker_process(argv: list[str]) -> None:
    """The worker processes of the tests above: ``concurrent STUDY OUT LOG READY DIR`` waits until both workers
    are ready, then runs trials of 0.3 s; ``hang STUDY OUT MARKER`` starts its first trial and never ends it."""
    mode, path, out = argv[:3]
    spec = load_study_spec(path)
    if mode == "concurrent":
        log, ready, folder = argv[3:6]
        open_study(spec, out)  # created once, under the study lock, whichever worker comes first
        Path(ready).touch()
        _wait_for(lambda: len(list(Path(folder).glob("ready*"))) == 2, what="the other worker")
        run_worker(spec, out, run_fn=FakeRun(log=Path(log), sleep=0.3))
    else:
        marker = Path(argv[3])

        def hang(cfg):
            marker.write_text(cfg.config_hash())
            time.sleep(600)

        run_worker(spec, out, run_fn=hang)


def test_committed_study_table_regenerates_from_its_journal_and_records(tmp_path):
    """results/hpo: the 24-trial study's table comes from the committed journal and run records alone."""
    from da.results.study import write_study_table

    repo = Path(__file__).resolve().parents[1] / "results" / "hpo"
    committed = repo / "tables" / "study_shot_mcc_rsscn7.md"
    path = write_study_table(repo / "studies" / "shot_mcc_rsscn7", tmp_path / "study.md", runs=repo / "runs")
    assert path.read_text() == committed.read_text()
    # and in LaTeX, from the same cells (issue 28: one table renderer for every task)
    tex = committed.with_suffix(".tex").read_text()
    assert path.with_suffix(".tex").read_text() == tex and tex.count(r"\begin{table}") == 2
    assert r"bnm & 24 / 0 & 75.7 (trial 0) & 75.4 (trial 16) & -0.4 & 76.4 (trial 22) & +1.1 \\" in tex
    assert "| bnm | 24 / 0 | 75.7 (trial 0) | 75.4 (trial 16) | -0.4 | 76.4 (trial 22) | +1.1 |" in committed.read_text()


def test_committed_study_shows_its_status_and_table_from_a_copy_elsewhere(tmp_path, monkeypatch, capsys):
    """Issue 31: da-hpo --status --table on results/hpo looked for the records under the absolute path the study
    ran in (another machine) and its error suggested a --runs flag da-hpo did not have."""
    import re
    import shutil

    from da.scripts.hpo import main

    repo = Path(__file__).resolve().parents[1] / "results" / "hpo"
    copy = tmp_path / "checkout" / "results" / "hpo"
    for part in ("studies", "runs"):
        shutil.copytree(repo / part, copy / part)
    monkeypatch.chdir(tmp_path / "checkout")  # a relative --out, as the documented command gives it
    args = ["--study", "shot_mcc_rsscn7", "--out", "results/hpo", "--status", "--table"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "trials: 24 done, 0 running" in out and "best so far: trial 16" in out
    committed = (repo / "tables" / "study_shot_mcc_rsscn7.md").read_text()
    assert "| bnm | 24 / 0 | 75.7 (trial 0) | 75.4 (trial 16) | -0.4 | 76.4 (trial 22) | +1.1 |" in out
    assert (copy / "studies" / "shot_mcc_rsscn7" / "results" / "study.md").read_text() == committed
    # records elsewhere: the error names a flag da-hpo has, and that flag finds them
    shutil.move(copy / "runs", tmp_path / "moved")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "no record of its run stage2-b6df87cd37e0" in err and "with --runs" in err
    with pytest.raises(SystemExit):
        main(["--help"])
    flags = set(re.findall(r"--[a-z][a-z-]*", capsys.readouterr().out))
    assert set(re.findall(r"--[a-z][a-z-]*", err)) <= flags
    assert main(args + ["--runs", str(tmp_path / "moved")]) == 0
