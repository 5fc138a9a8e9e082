"""Classification metrics from predictions: accuracy, per-class accuracy, macro F1, confusion matrix."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    labels = list(range(len(classes)))
    conf = confusion_matrix(y_true, y_pred, labels=labels)
    support = conf.sum(axis=1)
    per_class = {c: (float(conf[i, i] / support[i]) if support[i] else float("nan")) for i, c in enumerate(classes)}
    return {
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else float("nan"),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "per_class": per_class,
        "confusion": conf.tolist(),  # rows: true class, columns: predicted class
        "n": int(len(y_true)),
    }
