"""Anchor shapes fitted to the training boxes: k-means on (w, h) with the distance 1 - IoU.

Two boxes' shapes are compared with their centres aligned, so the IoU of (w1, h1) and (w2, h2) is
``min(w1, w2) * min(h1, h2) / (w1 h1 + w2 h2 - min(w1, w2) * min(h1, h2))``: the overlap an anchor at the
right place would have.  The distance 1 - IoU, unlike the Euclidean one, does not let large boxes dominate
(YOLOv2's argument).  The fit's quality is the mean over the boxes of their best anchor's IoU.

torchvision's ``AnchorGenerator`` convention: an anchor of size ``s`` and aspect ratio ``r`` is
``w = s / sqrt(r)``, ``h = s * sqrt(r)``, so ``r = h / w`` and ``s = sqrt(w h)``; every level gets every
ratio with each of its sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TORCHVISION_SIZES = ((32,), (64,), (128,), (256,), (512,))
TORCHVISION_RATIOS = (0.5, 1.0, 2.0)


def shape_iou(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """(N, K) IoU of N box shapes against K anchor shapes, centres aligned."""
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    inter = np.minimum(wh[:, None, 0], anchors[None, :, 0]) * np.minimum(wh[:, None, 1], anchors[None, :, 1])
    union = wh[:, None, 0] * wh[:, None, 1] + anchors[None, :, 0] * anchors[None, :, 1] - inter
    return inter / union


def mean_best_iou(wh: np.ndarray, anchors: np.ndarray) -> float:
    """Mean over the boxes of the IoU with their best-matching anchor shape."""
    return float(shape_iou(wh, anchors).max(axis=1).mean())


def boxes_wh(boxes) -> np.ndarray:
    """(N, 2) widths and heights of XYXY boxes (a tensor or an array)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)


@dataclass(frozen=True)
class AnchorFit:
    anchors: np.ndarray  # (k, 2) w, h sorted by area
    mean_iou: float  # mean best-anchor IoU of the fitted boxes
    assignment: np.ndarray  # (N,) index into anchors of each box's best anchor


def fit_anchors(wh: np.ndarray, k: int = 9, seed: int = 0, restarts: int = 5, max_iter: int = 300) -> AnchorFit:
    """k-means on box shapes with the distance 1 - IoU, seeded; the best of ``restarts`` runs (by mean
    best IoU).  Starts are k-means++ under the same distance; a cluster left empty is restarted at the
    box worst served.  Centres are the mean (w, h) of their members."""
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    if len(wh) < k:
        raise ValueError(f"fit_anchors: {len(wh)} boxes cannot make {k} anchors; lower k or add boxes")
    if (wh <= 0).any():
        raise ValueError("fit_anchors: every box needs a positive width and height (check the data reader)")
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(restarts):
        centres = _kmeanspp(wh, k, rng)
        assign = None
        for _ in range(max_iter):
            iou = shape_iou(wh, centres)
            new = iou.argmax(axis=1)
            if assign is not None and np.array_equal(new, assign):
                break
            assign = new
            for j in range(k):
                members = wh[assign == j]
                if len(members):
                    centres[j] = members.mean(axis=0)
                else:
                    centres[j] = wh[iou.max(axis=1).argmin()]
        score = mean_best_iou(wh, centres)
        if best is None or score > best[0]:
            best = (score, centres.copy())
    centres = best[1][np.argsort(best[1].prod(axis=1), kind="stable")]
    return AnchorFit(centres, mean_best_iou(wh, centres), shape_iou(wh, centres).argmax(axis=1))


def _kmeanspp(wh: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centres = [wh[rng.integers(len(wh))]]
    for _ in range(1, k):
        d = 1 - shape_iou(wh, np.array(centres)).max(axis=1)
        p = d ** 2
        centres.append(wh[rng.choice(len(wh), p=p / p.sum())] if p.sum() > 0 else wh[rng.integers(len(wh))])
    return np.array(centres, dtype=np.float64)


def anchor_shapes(sizes, aspect_ratios) -> np.ndarray:
    """The (w, h) shapes an ``AnchorGenerator(sizes, aspect_ratios)`` places, every level together (before
    torchvision rounds its cell anchors to whole pixels)."""
    out = []
    for level_sizes, level_ratios in zip(sizes, aspect_ratios):
        for r in level_ratios:
            for s in level_sizes:
                out.append((s / np.sqrt(r), s * np.sqrt(r)))
    return np.array(out, dtype=np.float64)


def default_anchor_shapes() -> np.ndarray:
    """torchvision's Faster R-CNN FPN defaults: sizes 32-512, one a level, ratios 0.5, 1, 2 (15 shapes)."""
    return anchor_shapes(TORCHVISION_SIZES, (TORCHVISION_RATIOS,) * len(TORCHVISION_SIZES))


@dataclass(frozen=True)
class AnchorGeneratorArgs:
    sizes: tuple[tuple[float, ...], ...]  # per FPN level, finest first
    aspect_ratios: tuple[tuple[float, ...], ...]  # h / w, the same tuple on every level

    def shapes(self) -> np.ndarray:
        return anchor_shapes(self.sizes, self.aspect_ratios)


def anchor_generator_args(anchors: np.ndarray, levels: int = 5, sizes_per_level: int = 1,
                          ratio_decimals: int = 2) -> AnchorGeneratorArgs:
    """``AnchorGenerator`` arguments for an FPN with ``levels`` levels from k fitted (w, h) anchors.

    Sizes: the anchors' sqrt(area), sorted, are resampled at ``levels * sizes_per_level`` evenly spaced
    quantiles (geometric interpolation between neighbours) and dealt out in order, smallest to the finest
    level; when k equals that number they are the anchors' own sizes.  Every level needs the same number of
    anchors per location because the RPN head predicts a fixed number, hence the resampling.  Ratios: the
    anchors' h / w rounded to ``ratio_decimals``, duplicates removed, shared by every level.  The generator
    makes all sizes x ratios per level, which is a superset of the fitted shapes; ``shapes()`` lists them
    so their mean best IoU can be reported as well."""
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    if levels < 1 or sizes_per_level < 1:
        raise ValueError(f"anchor_generator_args: levels={levels}, sizes_per_level={sizes_per_level} must be >= 1")
    scale = np.sort(np.sqrt(anchors.prod(axis=1)))
    n = levels * sizes_per_level
    pos = np.linspace(0, len(scale) - 1, n)
    resampled = np.exp(np.interp(pos, np.arange(len(scale)), np.log(scale)))
    sizes = tuple(tuple(float(round(v, 2)) for v in resampled[i * sizes_per_level:(i + 1) * sizes_per_level])
                  for i in range(levels))
    ratios = tuple(sorted({float(round(r, ratio_decimals)) for r in anchors[:, 1] / anchors[:, 0]}))
    return AnchorGeneratorArgs(sizes, (ratios,) * levels)
