"""The two-stage protocol: ImageNet -> stage 1 (supervised, intermediate dataset) -> stage 2 (adaptation).

Stage 1's run directory is named by the hash of its own config (``da.config.stage1_config``), so every
stage-2 run with the same stage-1 settings reuses one stage-1 model instead of training it again.
``stages=1`` skips it: ImageNet weights go straight into stage 2.
"""

from __future__ import annotations

import logging
from pathlib import Path

from da import records
from da.config import RunConfig, stage1_config
from da.rundir import BEST_FILE, run_dir_for
from da.train.engine import train_stage

log = logging.getLogger(__name__)


def run_experiment(cfg: RunConfig) -> Path:
    """Run (or resume, or reuse) every stage of ``cfg``; return the path of the stage-2 record."""
    cfg.validate()
    if cfg.download:  # every dataset of the protocol before any training, so a failure comes first
        from da.data import default_data_root
        from da.data.download import ensure_datasets
        ensure_datasets([cfg.stage1 if cfg.stages == 2 else "", cfg.source, cfg.target],
                        cfg.data_root or default_data_root(), progress=cfg.progress)
    init = None
    if cfg.stages == 2:
        s1 = stage1_config(cfg)
        s1_dir = run_dir_for(s1, 1)
        if records.is_done(s1_dir) and not (s1_dir / BEST_FILE).exists():
            raise FileNotFoundError(f"stage 1 {s1_dir} is marked done but its {BEST_FILE} is gone; delete that "
                                    f"directory (rm -r {s1_dir}) to retrain stage 1")
        if records.is_done(s1_dir):
            log.info("stage 1: reused %s (trained before with the same stage-1 config)", s1_dir)
            print(f"stage 1: reused {s1_dir}", flush=True)
        else:
            print(f"stage 1: training {s1_dir}", flush=True)
        train_stage(s1, stage=1)
        init = str(s1_dir / BEST_FILE)
    return train_stage(cfg, stage=2, init_weights=init)
