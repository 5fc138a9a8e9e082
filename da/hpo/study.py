"""A study: a base config, a search space, a budget of trials, a seed, a sampler and a label-free objective,
kept in an Optuna journal file that every worker (Slurm array task) shares.

A study is a YAML file: one shipped with the package (``da/launch/studies/<name>.yaml``, given by its
name) or any path::

    name: shot_mcc_rsscn7            # optional: the file's name without .yaml
    base: {method: shot+mcc, selection: bnm}   # config fields, like a sweep's base
    # config: my_run.yaml            # optional: a --config file (relative to this file), under base
    # presets: [paper]               # optional: presets, under config and base
    space:
      mcc_weight: {type: loguniform, low: 0.1, high: 3.0}
      lr: {type: loguniform, low: 3.3e-4, high: 3.0e-3}
    objective: bnm                   # a validator of da.selection, or rank (with rank_validators)
    n_trials: 24                     # the budget: trials finished, failed or running
    seed: 0
    sampler: tpe                     # tpe, or random (the baseline)
    enqueue_default: true            # trial 0 is the base config itself

The objective reads no target label: it is the validator's score of each trial's selected epoch, from the
run's own record.  Every validator scores higher-is-better (``da.selection.base``), so the study
maximises.  ``rank`` ranks the trials (not the epochs) on each of ``rank_validators`` and averages the
ranks; the ranks of a trial change as others finish, so the sampler is told the rank among the trials
finished by then, and the choice is made from the ranks over all trials at report time.

The study lives in ``<out>/studies/<name>/``: ``journal.log`` (Optuna's JournalStorage; appends under a
symlink lock, which works on NFS and frees itself 30 s after a killed holder), ``study.lock`` (held while a
worker claims a trial), ``locks/trial-NNNN.lock`` (held by the worker running that trial: a running trial
whose lock is free was left by a dead worker), ``logs/`` (the Slurm jobs) and ``results/`` (tables).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence


from da.config import PRESETS, ConfigError, RunConfig, config_fields, read_config_file
from da.hpo.space import SearchSpace, SpaceError, parse_space
from da.launch.sweep import STUDIES_DIR, named_yaml
from da.utils.safeload import load_file, plain_line

# Shipped with the package (setup.cfg package_data), so that names work in any install, not only a checkout.
JOURNAL_FILE = "journal.log"
STUDY_LOCK_FILE = "study.lock"
LOCKS_DIR = "locks"
LOGS_DIR = "logs"
RESULTS_DIR = "results"
SAMPLERS = ("tpe", "random")
TOP_KEYS = {"name", "description", "base", "config", "presets", "space", "objective", "rank_validators", "n_trials",
            "seed", "sampler", "enqueue_default"}
# the run overrides a study never takes from its file: where runs go and read their data is the launcher's
WHERE_FIELDS = ("out", "data_root")


@dataclass(frozen=True)
class StudySpec:
    name: str
    base: RunConfig
    space: SearchSpace
    n_trials: int
    seed: int = 0
    sampler: str = "tpe"
    objective: str = "bnm"
    rank_validators: tuple[str, ...] = ()
    enqueue_default: bool = True
    path: str = ""
    description: str = ""

    def config_for(self, params: dict[str, Any], **overrides: Any) -> RunConfig:
        """The run config of a trial: the base config with the trial's parameters (and ``overrides``, such
        as out and data_root, which do not change the run's hash)."""
        return self.base.replace(**params, **overrides).validate()

    def default_params(self) -> dict[str, Any]:
        """The base config's value of every searched field: trial 0 when ``enqueue_default``."""
        return {name: getattr(self.base, name) for name in self.space.names}

    def definition(self) -> dict[str, Any]:
        """What makes two studies the same study (the budget aside, which may grow): kept in the journal, and
        compared when a study is continued."""
        return {"name": self.name, "base": self.base.hashed_dict(), "space": self.space.to_dict(),
                "objective": self.objective, "rank_validators": list(self.rank_validators),
                "sampler": self.sampler, "seed": self.seed, "enqueue_default": self.enqueue_default}


def load_study_spec(name: str | os.PathLike) -> StudySpec:
    """A study by name (shipped: ``da/launch/studies/<name>.yaml``) or by path; errors name the file and key."""
    path = named_yaml(name, STUDIES_DIR, "study")
    where = f"study {path}"
    data = load_file(path, "study", yaml_only=True) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping with base, space, objective, n_trials, seed, sampler")
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(TOP_KEYS))}")
    for key in ("space", "n_trials"):
        if key not in data:
            raise ValueError(f"{where}: {key} is missing")
    base = _base_config(data, path, where)
    space_data = data["space"]
    space_where = f"{where}, space"
    if isinstance(space_data, str):  # a space of its own file, relative to the study file
        space_path = (path.parent / space_data)
        space_where = f"search space {space_path}"
        space_data = load_file(space_path, f"{where}: space", yaml_only=True)
    try:
        space = parse_space(space_data, space_where)
    except SpaceError as err:
        raise ValueError(str(err)) from None
    clash = sorted(set(space.names) & set(WHERE_FIELDS + ("seed",)))
    if clash:
        raise ValueError(f"{where}: space: {', '.join(clash)} cannot be searched (the seed is the study's "
                         f"protocol, not a hyperparameter)")
    spec = StudySpec(
        name=_text(data.get("name", path.stem), "name", where), base=base, space=space,
        n_trials=_count(data["n_trials"], "n_trials", where, low=1), seed=_count(data.get("seed", 0), "seed", where),
        sampler=data.get("sampler", "tpe"), objective=data.get("objective", base.selection),
        rank_validators=tuple(data.get("rank_validators") or base.rank_validators),
        enqueue_default=data.get("enqueue_default", True), path=str(path.resolve()),
        description=str(data.get("description", "")))
    _check(spec, data, where)
    return spec


def _text(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str) or not value or "/" in value or value.startswith("."):
        raise ValueError(f"{where}: {key} must be a plain name (it names the study's folder), got {value!r}")
    return plain_line(value, f"{where}: {key}")  # it names the Slurm job too


def _count(value: Any, key: str, where: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{where}: {key} must be an integer >= {low}, got {value!r}")
    return value


def _base_config(data: dict[str, Any], path: Path, where: str) -> RunConfig:
    """defaults < presets < config file < base, as for da-run (defaults < --preset < --config < flags)."""
    values: dict[str, Any] = {}
    source: dict[str, str] = {}
    presets = data.get("presets") or []
    if not isinstance(presets, list) or any(p not in PRESETS for p in presets):
        raise ValueError(f"{where}: presets must be a list of {', '.join(sorted(PRESETS))}, got {presets!r}")
    for p in presets:
        values.update(PRESETS[p])
        source.update({k: f"presets ({p})" for k in PRESETS[p]})
    if data.get("config"):
        try:
            config = read_config_file(path.parent / str(data["config"]))
        except ValueError as err:  # names the file and key
            raise ValueError(f"{where}: config: {err}") from None
        values.update(config)
        source.update({k: f"config {data['config']}, key {k}" for k in config})
    base = data.get("base") or {}
    if not isinstance(base, dict):
        raise ValueError(f"{where}: base must be a mapping of config fields")
    valid = {f.name for f in config_fields()}
    unknown = sorted(set(base) - valid)
    if unknown:
        raise ValueError(f"{where}: unknown config field(s) in base: {', '.join(unknown)}")
    where_set = sorted(set(base) & set(WHERE_FIELDS))
    if where_set:
        raise ValueError(f"{where}: base.{where_set[0]}: give it on the command line (--out, --data-root), not in "
                         f"the study file: a study's runs may go anywhere")
    values.update(base)
    source.update({k: f"base.{k}" for k in base})
    try:
        return RunConfig.from_dict(values).validate()
    except ConfigError as err:
        raise ValueError(f"{where}: {source.get(err.field, 'base')}: {err}") from None
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: base: {err}") from None


def _check(spec: StudySpec, data: dict[str, Any], where: str) -> None:
    from da.selection import LAST, RANK, check_validator_name

    if spec.sampler not in SAMPLERS:
        raise ValueError(f"{where}: sampler {spec.sampler!r} is not valid; choose from {', '.join(SAMPLERS)}")
    if not isinstance(spec.enqueue_default, bool):
        raise ValueError(f"{where}: enqueue_default must be true or false, got {spec.enqueue_default!r}")
    try:
        check_validator_name(spec.objective, "objective")
        for v in spec.rank_validators:
            check_validator_name(v, "rank_validators", allow_rank=False)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    if spec.objective == LAST:  # it ranks epochs of one run; configurations would all score the same
        raise ValueError(f"{where}: objective 'last' is no score of a configuration (it picks each run's final "
                         f"epoch); choose a scored validator or rank")
    if spec.objective != RANK and data.get("rank_validators"):
        raise ValueError(f"{where}: rank_validators applies to objective rank only (objective is {spec.objective!r})")
    for p in spec.space.params:
        values = list(p.choices) if p.type == "categorical" else [p.low, p.high]
        for value in values:
            try:
                spec.base.replace(**{p.name: value}).validate()
            except ConfigError as err:
                raise ValueError(f"{where}: space.{p.name}: the value {value!r} cannot run: {err}") from None
        if len({spec.base.replace(**{p.name: v}).config_hash() for v in values}) == 1:
            raise ValueError(f"{where}: space.{p.name}: changes nothing in method {spec.base.method!r}'s runs (the "
                             f"field is a setting of another method); search a field the method uses")
        if spec.enqueue_default and not p.contains(getattr(spec.base, p.name)):
            raise ValueError(f"{where}: space.{p.name}: the base config's value {getattr(spec.base, p.name)!r} lies "
                             f"outside {p.describe()}, so the default configuration cannot be trial 0; widen the "
                             f"range, or set enqueue_default: false")


# ---------------------------------------------------------------------------------------------- storage
def study_dir(out: str | os.PathLike, name: str) -> Path:
    return Path(out) / "studies" / name


def journal_storage(sdir: Path):
    """Optuna's journal storage on ``sdir/journal.log``: every change is an appended line, written under a
    symlink lock (atomic on NFS, unlike fcntl locks on some NFS servers, and taken over 30 s after a
    killed holder), so array tasks on several nodes share one file safely."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

    path = str(sdir / JOURNAL_FILE)
    lock = JournalFileSymlinkLock(path)
    lock.acquire()  # the lock every writer appends under: no line is being written while we look
    try:
        repair_journal(Path(path))
    finally:
        lock.release()
    return JournalStorage(JournalFileBackend(path, lock_obj=lock))


def repair_journal(path: Path) -> int:
    """Cut a journal back to its last complete line (a worker killed in the middle of an append leaves half a
    line, and the next append would glue itself to it and make the whole journal unreadable); returns the bytes
    removed, with a warning.  Call it under the journal's lock."""
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return 0
        f.seek(0)
        content = f.read()
        keep = content.rfind(b"\n") + 1
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    cut = len(content) - keep
    warnings.warn(f"{path}: its last line was cut ({cut} bytes: a worker killed while writing it); removed it, the "
                  f"trials before it are intact", stacklevel=2)
    return cut


@contextlib.contextmanager
def study_lock(sdir: Path) -> Iterator[None]:
    """Held while a worker looks for an abandoned trial or asks for a new one, and while --status probes the
    trial locks: a trial is created and locked by its worker in one step that nobody else sees half done."""
    from da.utils.io import exclusive_lock

    with exclusive_lock(sdir / STUDY_LOCK_FILE):
        yield


class TrialLock:
    """``locks/trial-NNNN.lock``, flock-ed by the worker that runs trial NNNN for as long as it runs it.  The
    kernel (or the NFS lock manager) drops the lock of a dead process, so a RUNNING trial whose lock can be
    taken was left by a dead or preempted worker."""

    def __init__(self, sdir: Path, number: int):
        self.path = sdir / LOCKS_DIR / f"trial-{number:04d}.lock"
        self._file = None

    def try_acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return False
        f.seek(0)
        f.truncate()
        f.write(f"{worker_name()}\n")
        f.flush()
        self._file = f
        return True

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def worker_name() -> str:
    """Who runs a trial: host, process and Slurm job (array task) when there is one."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{job}_{os.environ.get('SLURM_ARRAY_TASK_ID')}" if job else os.environ.get("SLURM_JOB_ID")
    return f"{os.uname().nodename} pid {os.getpid()}" + (f" job {job}" if job else "")


def make_sampler(spec: StudySpec, k: int):
    """The sampler for the ``k``-th trial created in the study, seeded from (seed, k).

    A sampler seeded once per process would repeat itself: two array tasks started together, or a worker
    started after another stopped, would draw the same first configurations.  Seeding each trial from the
    study's seed and the number of trials before it gives sequential workers the same sequence as one
    worker, and concurrent ones different draws.  TPE keeps no state between trials besides its random
    generator (it refits on the stored trials each time), so a fresh sampler per trial loses nothing;
    constant_liar makes it treat the running trials as bad, so that concurrent workers spread out."""
    import numpy as np
    import optuna

    trial_seed = int(np.random.SeedSequence([spec.seed, k]).generate_state(1)[0])
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=trial_seed)
    return optuna.samplers.TPESampler(seed=trial_seed, constant_liar=True)


def quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def open_study(spec: StudySpec, out: str | os.PathLike, create: bool = True):
    """The study of ``spec`` under ``out``: created (trial 0 the default configuration) when new, else loaded
    and checked to be the same study.  With ``create`` False a missing study raises FileNotFoundError."""
    import optuna

    sdir = study_dir(out, spec.name)
    if not create and not (sdir / JOURNAL_FILE).exists():
        raise FileNotFoundError(f"no study {spec.name!r} under {Path(out).resolve()} (no {sdir / JOURNAL_FILE}); "
                                f"submit it first: da-hpo --study {spec.path or spec.name} --out {out}")
    sdir.mkdir(parents=True, exist_ok=True)
    with study_lock(sdir):
        storage = journal_storage(sdir)
        if spec.name in optuna.get_all_study_names(storage):
            study = optuna.load_study(study_name=spec.name, storage=storage, sampler=make_sampler(spec, 0))
            stored = study.user_attrs.get("definition")
            if stored != spec.definition():
                differ = sorted(k for k in spec.definition() if (stored or {}).get(k) != spec.definition()[k])
                raise ValueError(f"study {spec.path or spec.name}: the study in {sdir} was made from another "
                                 f"definition (it differs in: {', '.join(differ)}); continuing it would mix two "
                                 f"searches. Give the study another name, or remove {sdir} to start over")
            if create and study.user_attrs.get("n_trials") != spec.n_trials:
                study.set_user_attr("n_trials", spec.n_trials)  # the budget may grow between submissions
            return study
        if not create:
            raise FileNotFoundError(f"{sdir / JOURNAL_FILE} holds no study {spec.name!r}")
        study = optuna.create_study(study_name=spec.name, storage=storage, direction="maximize",
                                    sampler=make_sampler(spec, 0))
        study.set_user_attr("definition", spec.definition())
        study.set_user_attr("n_trials", spec.n_trials)
        study.set_user_attr("out", str(Path(out).resolve()))
        study.set_user_attr("study_file", spec.path)
        study.set_user_attr("created_at", datetime.datetime.now().astimezone().isoformat(timespec="seconds"))
        if spec.enqueue_default:
            study.enqueue_trial(spec.default_params(), user_attrs={"default": True})
        return study


def load_study_dir(sdir: str | os.PathLike):
    """The study kept in ``sdir`` (``<out>/studies/<name>``), read back without its YAML file (tables)."""
    import optuna

    sdir = Path(sdir)
    if not (sdir / JOURNAL_FILE).is_file():
        raise FileNotFoundError(f"{sdir} holds no study (no {JOURNAL_FILE}): submit the study first (da-hpo --study "
                                f"FILE --out OUT makes OUT/studies/<name>), or give the --out it was submitted with")
    storage = journal_storage(sdir)
    names = optuna.get_all_study_names(storage)
    if len(names) != 1:
        raise ValueError(f"{sdir / JOURNAL_FILE} holds {len(names)} studies ({', '.join(names)}); expected one")
    return optuna.load_study(study_name=names[0], storage=storage)


# ---------------------------------------------------------------------------------------------- objective
def selected_scores(record: dict[str, Any]) -> tuple[int, dict[str, float]]:
    """The selected epoch of a run record and every validator's score of it (no target label among them)."""
    epoch = record["selected_epoch"]
    scores = record["epochs"][epoch - 1].get("scores")
    if not scores:
        raise ValueError(f"run record of {record.get('config_hash')}: epoch {epoch} has no validator scores "
                         f"(schema {record.get('schema_version')}); rerun it with this code")
    return epoch, {k: float("nan") if v is None else float(v) for k, v in scores.items()}  # null: a NaN score


def rank_average(rows: Sequence[dict[str, float]], validators: Sequence[str]) -> list[float]:
    """For trials' score dicts: each validator ranks the trials (higher score, higher rank; ties averaged;
    a NaN score ranks lowest), the ranks are divided by the number of trials (so 1 is the best), and each
    trial's value is their mean over ``validators``."""
    import numpy as np
    from scipy.stats import rankdata

    if not rows:
        return []
    per = []
    for v in validators:
        values = np.array([r[v] for r in rows], dtype=float)
        per.append(rankdata(np.where(np.isnan(values), -np.inf, values)) / len(rows))
    return [float(x) for x in np.mean(per, axis=0)]


def objective_of(scores: dict[str, float], objective: str) -> float:
    value = scores.get(objective)
    if value is None:
        raise KeyError(f"objective {objective!r}: the run's record has no such score (it has {', '.join(scores)})")
    if not math.isfinite(value):
        raise ValueError(f"objective {objective!r} is {value} at the selected epoch")
    return value
