"""A detection sweep on the real local Slurm (slurm/local/start.sh): one array job for the missing runs, and
a second submission submits nothing.  (Resuming a killed run is tested in test_detection_model.py; the
requeue on preemption is submitit's, as for classification sweeps.)

    bash slurm/local/start.sh && . slurm/local/state/env.sh && python -m pytest -m slurm tests/test_detection_slurm.py
"""

import json
import pytest

from da.detection.sweep import load_detection_sweep, submit_detection_sweep
from test_detection_model import _tiny
from test_slurm_local import _sinfo_problem

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def cluster():
    problem = _sinfo_problem()
    if problem:
        pytest.skip(f"local Slurm not reachable: {problem}")


def test_detection_sweep_array_then_nothing_missing(cluster, tmp_path):
    cfg = _tiny(tmp_path, epochs=1)
    base = {k: v for k, v in cfg.to_dict().items() if k not in ("out", "data_root", "seed")}  # seeds: the sweep's
    (tmp_path / "s.yaml").write_text(f"base: {json.dumps(base)}\ngrid:\n  anchors: [default, fitted]\n")
    sweep = load_detection_sweep(tmp_path / "s.yaml")
    summary = submit_detection_sweep(sweep, cluster="slurm", profile="local", out=cfg.out, data_root=cfg.data_root)
    assert summary["submit"] == 2 and len({j.split("_")[0] for j in summary["jobs"]}) == 1  # one array
    for job in summary["job_objects"]:
        job.result()  # raises with the job's error if the run failed
    records = [json.loads((c.run_dir() / "record.json").read_text()) for c in sweep.configs(out=cfg.out,
                                                                                           data_root=cfg.data_root)]
    assert sorted(r["config"]["anchors"] for r in records) == ["default", "fitted"]
    assert all(r["launch"].get("slurm_job_id") for r in records)
    again = submit_detection_sweep(sweep, cluster="slurm", profile="local", out=cfg.out, data_root=cfg.data_root)
    assert (again["done"], again["submit"]) == (2, 0)
