"""A finished run as a usable model: its config, classes, selected weights, input transform and prior."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from da.config import RunConfig
from da.data.folder import ImageListDataset
from da.data.transforms import eval_transform
from da.models import build_model
from da.prior.calibration import BiasCorrectedTemperature
from da.prior.estimate import correct_posteriors
from da.utils.io import file_digest
from da.rundir import BEST_FILE, DONE_FILE, RECORD_FILE
from da.utils.safeload import load_file


class RunNotUsable(ValueError):
    """A run directory that cannot serve as a model (not finished, no selected model, another architecture)."""


@dataclass
class FinishedRun:
    run_dir: Path
    config: RunConfig
    record: dict
    classes: list[str]
    model: torch.nn.Module  # in eval mode, on the CPU unless moved
    selected_epoch: int

    @property
    def img_size(self) -> int:
        return self.config.img_size

    @property
    def mean(self) -> list[float]:
        return [round(float(v), 6) for v in self.model.norm_mean]

    @property
    def std(self) -> list[float]:
        return [round(float(v), 6) for v in self.model.norm_std]

    def own_splits(self, root: str | os.PathLike):
        """The run's splits rebuilt from its config under ``root``, refused unless they are the images the run
        saw: the same (split, image, class) list (its manifest) and, where the record fingerprints contents, the
        same file contents."""
        from da.data.domains import CONTENT_FINGERPRINT
        from da.train.setup import load_splits

        splits = load_splits(self.config.replace(data_root=str(root), download=False), 2)
        expected = self.record.get("manifest_sha256")
        if expected and splits.manifest_hash() != expected:
            raise RunNotUsable(f"the images under {root} do not give the splits run {self.run_dir} saw (its "
                               f"manifest.csv has sha256 {expected[:12]}..., these {splits.manifest_hash()[:12]}...): "
                               f"images were added, removed or relabelled; give --data-root with the data the run "
                               f"trained on")
        saved = (self.record.get("inputs") or {}).get("data", "")
        if saved.startswith(CONTENT_FINGERPRINT) and splits.fingerprint() != saved:
            raise RunNotUsable(f"the images under {root} are not the files run {self.run_dir} saw (same names, other "
                               f"contents: replaced or edited); give --data-root with the data the run trained on")
        if list(splits.classes) != list(self.classes):
            raise RunNotUsable(f"run {self.run_dir}: its classes {self.classes} differ from its splits' "
                               f"{splits.classes}; rerun the run")
        return splits

    @torch.no_grad()
    def logits(self, folder: Path, samples: list[tuple[str, int]], batch_size: int = 64, device: str = "cpu",
               num_workers: int = 0, progress: bool = True) -> torch.Tensor:
        """The model's logits (N, C) on ``samples`` (relative path, any label) under ``folder``, in order."""
        loader = DataLoader(ImageListDataset(folder, samples, self.transform()), batch_size=batch_size,
                            shuffle=False, num_workers=num_workers)
        model = self.model.to(device)
        out = []
        # a bar on a terminal only, as in training
        for x, _, _ in tqdm(loader, desc="predict", disable=not progress or None, leave=False):
            out.append(model(x.to(device))[0].float().cpu())
        return torch.cat(out) if out else torch.empty(0, len(self.classes))

    def transform(self):
        """The evaluation transform the run scored its target-test images with (resize, centre crop, normalise)."""
        return eval_transform(self.img_size, self.mean, self.std)

    @property
    def prior(self) -> dict | None:
        """The selected epoch's target-prior estimate (``--prior``), or None."""
        return self.record.get("prior")

    def prior_corrected(self, logits: torch.Tensor) -> torch.Tensor:
        """Posteriors (N, C) calibrated as in the run (BCTS) and corrected to its target-prior estimate."""
        prior = self.prior
        if not prior:
            raise RunNotUsable(f"run {self.run_dir} has no target-prior estimate (it ran without --prior); "
                               f"predict without --prior-correction")
        if "bias" not in prior or "source_prior" not in prior:
            raise RunNotUsable(f"run {self.run_dir}: its record keeps the prior estimate but not the calibration it "
                               f"was made with (a record from before this was stored); rerun it to correct "
                               f"predictions")
        calibration = BiasCorrectedTemperature(temperature=float(prior["temperature"]),
                                               bias=torch.tensor(prior["bias"], dtype=torch.float64))
        return correct_posteriors(calibration.probabilities(logits), torch.tensor(prior["estimate"]),
                                  torch.tensor(prior["source_prior"])).float()


def load_run(run_dir: str | os.PathLike) -> FinishedRun:
    """The selected model of a finished run directory (``stage*-<hash>/`` with ``record.json`` and ``DONE``)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist; give a folder such as runs/stage2-<hash>")
    if not (run_dir / DONE_FILE).exists() or not (run_dir / RECORD_FILE).exists():
        raise RunNotUsable(f"run {run_dir} has not finished (no {DONE_FILE} marker and {RECORD_FILE}); rerun its "
                           f"command to finish it (it resumes from its checkpoint)")
    best = run_dir / BEST_FILE
    if not best.exists():
        raise RunNotUsable(f"run {run_dir} has no selected model {BEST_FILE} (an archived record keeps only the "
                           f"numbers); use the run directory the run trained in")
    try:
        record = json.loads((run_dir / RECORD_FILE).read_text())
        cfg = RunConfig.from_record(record["config"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RunNotUsable(f"run {run_dir}: {RECORD_FILE} is unreadable ({err}); rerun the run") from err
    try:
        payload = torch.load(best, map_location="cpu", weights_only=True)
        state, classes = payload["model"], list(payload.get("classes") or record["classes"])
    except Exception as err:  # a damaged or foreign file: torch raises several types
        raise RunNotUsable(f"{best} is not a model checkpoint of this project ({type(err).__name__}: {err}); "
                           f"rerun the run to write it again") from err
    model = build_model(cfg.backbone, len(classes), weights="none", bottleneck_dim=cfg.bottleneck_dim or None,
                        dropout=cfg.dropout)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise RunNotUsable(f"{best} does not fit the run's model ({cfg.backbone}, {len(classes)} classes, "
                           f"bottleneck {cfg.bottleneck_dim}): {first}; the checkpoint is of another architecture "
                           f"or was replaced") from err
    model.eval()
    return FinishedRun(run_dir=run_dir, config=cfg, record=record, classes=classes, model=model,
                       selected_epoch=int(payload.get("epoch", record.get("selected_epoch", 0))))


@dataclass
class ExportedModel:
    """An ONNX export of a run (``da-export``): ``model.onnx`` with its ``model_card.json``, run by onnxruntime."""

    path: Path
    card: dict
    classes: list[str]
    session: object  # an onnxruntime.InferenceSession

    prior = None  # an export carries no prior estimate: prior correction needs the run directory

    def transform(self):
        spec = self.card["input"]
        return eval_transform(int(spec["img_size"]), spec["mean"], spec["std"])

    def prior_corrected(self, logits: torch.Tensor) -> torch.Tensor:
        raise RunNotUsable(f"{self.path} is an exported model without the run's prior estimate; give the run "
                           f"directory (--run) for --prior-correction")

    def logits(self, folder: Path, samples: list[tuple[str, int]], batch_size: int = 64, device: str = "cpu",
               num_workers: int = 0, progress: bool = True) -> torch.Tensor:
        loader = DataLoader(ImageListDataset(folder, samples, self.transform()), batch_size=batch_size,
                            shuffle=False, num_workers=num_workers)
        name = self.session.get_inputs()[0].name
        out = [torch.from_numpy(self.session.run(None, {name: x.numpy()})[0])
               for x, _, _ in tqdm(loader, desc="predict", disable=not progress or None, leave=False)]
        return torch.cat(out) if out else torch.empty(0, len(self.classes))


def _check_card(card: dict, onnx_file: Path) -> list[str]:
    """The card's classes and input, and the sha256 it gives for the ONNX file, against that file: the
    classes, checked (a list of distinct names)."""
    classes = card["classes"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        raise ValueError("classes: expected a non-empty list of class names")
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise ValueError(f"classes: {', '.join(repeated)} named more than once, so two outputs would read as one")
    inp = card["input"]
    if not {"img_size", "mean", "std"} <= set(inp):
        raise KeyError("input: img_size, mean, std")
    if not (isinstance(inp["img_size"], int) and inp["img_size"] > 0 and len(inp["mean"]) == len(inp["std"]) == 3
            and all(isinstance(s, (int, float)) and s > 0 for s in inp["std"])):
        raise ValueError(f"input: img_size {inp['img_size']!r}, mean {inp['mean']!r}, std {inp['std']!r} are not an "
                         f"image size and 3 channel means and positive standard deviations")
    expected = (card.get("files") or {}).get(onnx_file.name, {}).get("sha256")
    if not expected:
        raise KeyError(f"files: {onnx_file.name}: sha256")
    actual = file_digest(onnx_file)
    if actual != expected:
        raise ValueError(f"{onnx_file} has sha256 {actual[:12]}..., the card says {expected[:12]}...: the model file "
                         f"was changed or replaced after the export")
    return classes


def load_exported(path: str | os.PathLike) -> ExportedModel:
    """An export folder (or its ``model.onnx``) with ``model_card.json`` beside it, verified: the model file
    has the sha256 the card gives, and the card's classes, input and output width fit the model."""
    path = Path(path)
    onnx_file = path / "model.onnx" if path.is_dir() else path
    card_file = onnx_file.parent / "model_card.json"
    if not onnx_file.is_file() or not card_file.is_file():
        raise FileNotFoundError(f"{path}: expected an export of da-export (model.onnx with model_card.json beside "
                                f"it); run da-export --run RUN_DIR first")
    try:
        card = load_file(card_file, "model card")
        classes = _check_card(card, onnx_file)
    except (ValueError, KeyError, TypeError) as err:
        raise RunNotUsable(f"{card_file} does not describe {onnx_file.name} ({err}); export the run again") from err
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ModuleNotFoundError('predicting with an ONNX export needs onnxruntime: pip install "da[export]"') from err
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    width = session.get_outputs()[0].shape[-1]
    if isinstance(width, int) and width != len(classes):
        raise RunNotUsable(f"{card_file} names {len(classes)} classes, {onnx_file.name} has {width} outputs; export "
                           f"the run again")
    return ExportedModel(path=onnx_file, card=card, classes=classes, session=session)
