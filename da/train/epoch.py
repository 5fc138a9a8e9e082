"""One training epoch: source batches (and target batches when the method needs them) through the model,
``cls(source) + sum of the method's terms [+ w_t * CE(labelled target)]``, one optimiser step each."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from da.methods import StepOutputs
from da.train.batches import cycle_batches
from da.train.setup import Run


class NonFiniteLossError(FloatingPointError):
    pass


@dataclass
class EpochResult:
    loss: dict[str, float]  # mean of each term over the epoch's steps
    images: int
    seconds: float


def train_epoch(run: Run, epoch: int, checkpoint_hint: str) -> EpochResult:
    """Train epoch ``epoch`` (0-based).  ``checkpoint_hint`` names the last good checkpoint for the error
    a non-finite loss raises."""
    cfg, model, data, device = run.cfg, run.model, run.data, run.device
    if run.unfreezer is not None:
        run.unfreezer.on_epoch_start(epoch)
    t_epoch = time.perf_counter()
    sums: dict[str, float] = {}
    target_iter = cycle_batches(data.target, epoch) if data.target is not None else None
    labeled_iter = cycle_batches(data.target_labeled, epoch) if data.target_labeled is not None else None
    # disable=None: a bar only on a terminal; in a file (every Slurm log) the engine's one line per epoch
    bar = tqdm(data.source.epoch(epoch), total=run.steps_per_epoch, disable=not cfg.progress or None, leave=False,
               desc=f"stage {run.stage} epoch {epoch + 1}/{cfg.epochs}")
    n_images = 0
    params = run.trainable_parameters()  # fixed within an epoch (gradual unfreezing acts at its start)
    for step, (xs, ys) in enumerate(bar):
        if step >= run.steps_per_epoch:
            break
        global_step = epoch * run.steps_per_epoch + step
        xs, ys = xs.to(device), ys.to(device)
        if run.mixer is not None:
            xs, ys = run.mixer(xs, ys)
        xt, idx_t = next(target_iter) if target_iter is not None else (None, None)
        xt = xt.to(device) if xt is not None else None
        # consistency methods: the same target images' weak (evaluation-transform) views join the forward
        xw = data.target_pass.inputs_at(idx_t).to(device) if run.method.needs_weak_target else None
        w_s = run.class_ratio[ys] if run.class_ratio is not None and ys.dim() == 1 else None
        if run.channels_last and xs.dim() == 4:
            xs = xs.contiguous(memory_format=torch.channels_last)
            xt = xt.contiguous(memory_format=torch.channels_last) if xt is not None else None
            xw = xw.contiguous(memory_format=torch.channels_last) if xw is not None else None
        with run.autocast():
            # weak views labelled by a model of the method's own (an EMA teacher) stay out of the trained forward
            teacher_tw = run.method.weak_view_logits(xw, data.start) if xw is not None else None
            joint = [xs, xt] if xw is None or teacher_tw is not None else [xs, xt, xw]
            if xt is not None:  # one forward over both domains: BatchNorm sees the joint batch, as in DAN
                logits, z = model.forward_from(torch.cat(joint), data.start)
                ns, nt = len(xs), len(xs) + len(xt)
                logits_tw = teacher_tw if teacher_tw is not None else (logits[nt:] if xw is not None else None)
                out = StepOutputs(logits[:ns], z[:ns], ys, logits[ns:nt], z[ns:nt], global_step / run.total_steps,
                                  idx_t, w_s, logits_tw=logits_tw)
            else:
                logits_s, z_s = model.forward_from(xs, data.start)
                out = StepOutputs(logits_s, z_s, ys, None, None, global_step / run.total_steps, None, w_s)
            terms = {"cls": run.cls_loss(out.logits_s.float(), ys)}
            terms.update(run.method(out))
            if labeled_iter is not None:
                xl, yl = next(labeled_iter)
                terms["target_cls"] = cfg.target_weight * run.labeled_loss(
                    model.forward_from(xl.to(device), data.start)[0].float(), yl.to(device))
            loss = sum(terms.values())
        if not torch.isfinite(loss):
            detail = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
            raise NonFiniteLossError(
                f"stage {run.stage}: non-finite loss at epoch {epoch + 1}, step {step + 1} (global step "
                f"{global_step + 1}): {detail}. The last good checkpoint {checkpoint_hint} is intact; lower --lr "
                f"or check the data")
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        if cfg.clip_grad_norm > 0:
            run.scaler.unscale_(run.optimizer)
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        run.method.on_step_end()
        if run.weight_average is not None:
            run.weight_average.update(model)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        n_images += len(xs) + (len(xt) if xt is not None else 0) + (len(xw) if xw is not None else 0)
        if cfg.progress:
            bar.set_postfix({k: f"{v / (step + 1):.3f}" for k, v in sums.items()}
                            | {"img/s": f"{n_images / max(1e-9, time.perf_counter() - t_epoch):.0f}"})
    return EpochResult({k: v / run.steps_per_epoch for k, v in sums.items()}, n_images, time.perf_counter() - t_epoch)
