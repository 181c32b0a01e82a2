"""GLUE metrics in plain numpy, computed once over a whole eval set.

Averaging per-batch values is wrong for F1, MCC and correlations, so callers
collect every prediction of a split and call `compute_metrics` once; padding rows
are dropped through `weights` (1 real, 0 padding) before anything is computed.
Definitions match sklearn/scipy as GLUE uses them (F1 of class 1, multiclass MCC,
Spearman with average ranks for ties), with 0 where sklearn returns 0 for a
degenerate MCC/F1 and NaN where scipy returns NaN for a constant input.
"""

from __future__ import annotations

import numpy as np

from adamix_jax.data.tasks import TaskSpec


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
  predictions, labels = _check_pair(predictions, labels)
  return float(np.mean(predictions == labels))


def f1(predictions: np.ndarray, labels: np.ndarray, positive: int = 1) -> float:
  """Binary F1 of class `positive`; 0 when it is never predicted nor present."""
  predictions, labels = _check_pair(predictions, labels)
  tp = np.sum((predictions == positive) & (labels == positive))
  fp = np.sum((predictions == positive) & (labels != positive))
  fn = np.sum((predictions != positive) & (labels == positive))
  denominator = 2 * tp + fp + fn
  return float(2 * tp / denominator) if denominator else 0.0


def matthews_corrcoef(predictions: np.ndarray, labels: np.ndarray) -> float:
  """Matthews correlation (multiclass R_K form, equal to phi for 2 classes)."""
  predictions, labels = _check_pair(predictions, labels)
  classes, inverse = np.unique(np.concatenate([labels, predictions]),
                               return_inverse=True)
  k, n = len(classes), len(labels)
  confusion = np.zeros((k, k), np.float64)
  np.add.at(confusion, (inverse[:n], inverse[n:]), 1.0)
  t = confusion.sum(axis=1)  # true occurrences of each class
  p = confusion.sum(axis=0)  # predicted occurrences of each class
  c, s = np.trace(confusion), float(n)
  denominator = np.sqrt((s * s - p @ p) * (s * s - t @ t))
  return float((c * s - t @ p) / denominator) if denominator else 0.0


def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
  """Pearson correlation; NaN when either side is constant (as scipy)."""
  x, y = _check_pair(predictions, labels, dtype=np.float64)
  x, y = x - x.mean(), y - y.mean()
  denominator = np.sqrt((x @ x) * (y @ y))
  return float(x @ y / denominator) if denominator else float('nan')


def spearman(predictions: np.ndarray, labels: np.ndarray) -> float:
  """Spearman correlation: Pearson of ranks, tied values sharing their mean rank."""
  x, y = _check_pair(predictions, labels, dtype=np.float64)
  return pearson(_average_ranks(x), _average_ranks(y))


def compute_metrics(task: TaskSpec,
                    predictions: np.ndarray,
                    labels: np.ndarray,
                    weights: np.ndarray | None = None) -> dict[str, float]:
  """Scores one whole eval split with the task's GLUE metrics.

  Args:
    task: the task; its `metrics` are the keys of the result.
    predictions: class ids [n] for classification, scores [n] for regression.
    labels: gold class ids or scores [n].
    weights: optional [n] mask; rows with weight 0 (eval padding) are dropped.
      Any other value than 0 or 1 is an error: metrics here are unweighted.

  Returns:
    {metric name: value}, e.g. {'accuracy': .9, 'f1': .8, 'combined': .85}.
  """
  predictions, labels = np.asarray(predictions), np.asarray(labels)
  if weights is not None:
    weights = np.asarray(weights)
    if weights.shape != labels.shape:
      raise ValueError(f'weights shape {weights.shape} != labels shape '
                       f'{labels.shape}.')
    if not np.all((weights == 0) | (weights == 1)):
      raise ValueError('weights must be 0 (padding) or 1 (real example).')
    keep = weights == 1
    predictions, labels = predictions[keep], labels[keep]
  if not task.is_regression:
    predictions, labels = predictions.astype(np.int64), labels.astype(np.int64)
  functions = {'accuracy': accuracy, 'f1': f1, 'mcc': matthews_corrcoef,
               'pearson': pearson, 'spearman': spearman}
  results = {m: functions[m](predictions, labels)
             for m in task.metrics if m != 'combined'}
  if 'combined' in task.metrics:
    results['combined'] = float(np.mean(list(results.values())))
  return results


def _check_pair(predictions, labels, dtype=None):
  predictions, labels = np.asarray(predictions), np.asarray(labels)
  if dtype is not None:
    predictions, labels = predictions.astype(dtype), labels.astype(dtype)
  if predictions.ndim != 1 or predictions.shape != labels.shape:
    raise ValueError(f'Expected two 1-D arrays of equal length, got shapes '
                     f'{predictions.shape} and {labels.shape}.')
  if not len(labels):
    raise ValueError('Cannot compute a metric on zero examples.')
  return predictions, labels


def _average_ranks(x: np.ndarray) -> np.ndarray:
  """1-based ranks with ties replaced by the mean of the ranks they span."""
  order = np.argsort(x, kind='stable')
  sorted_x = x[order]
  # Start of each run of equal values in sorted order.
  starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
  ends = np.r_[starts[1:], len(x)]
  run_ranks = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
  ranks = np.empty(len(x), np.float64)
  ranks[order] = np.repeat(run_ranks, ends - starts)
  return ranks
