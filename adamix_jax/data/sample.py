"""K-shot sampling: K examples drawn from a full training set with a seed, in total or per
class (source 'sample', whose entry in `sources.py` reads the full set)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from adamix_jax.data.formats import DataError, Example


def sample_examples(examples: Sequence[Example], k: int, seed: int, *,
                    per_class: bool, num_labels: int | None = None
                    ) -> list[Example]:
  """K examples drawn without replacement, kept in their original order.

  Args:
    examples: the full training set.
    k: examples in total, or per class when `per_class`.
    seed: `np.random.default_rng(seed)` draws them (per class: class by class,
      in label order, from one stream).
    per_class: draw k of every class (classification only).
    num_labels: the task's class count (needed when `per_class`).

  Returns:
    k (or k * num_labels) examples.
  """
  k = int(k)
  if k <= 0:
    raise ValueError(f'data.fewshot_k must be positive to sample, got {k}.')
  rng = np.random.default_rng(int(seed))
  if not per_class:
    if k > len(examples):
      raise DataError(f'Cannot sample {k} examples from {len(examples)}.')
    picks = rng.choice(len(examples), k, replace=False)
  else:
    if not num_labels or any(isinstance(e.label, float) for e in examples[:1]):
      raise ValueError('Per-class sampling needs a classification task.')
    labels = np.asarray([e.label for e in examples])
    picks = []
    for c in range(num_labels):
      members = np.flatnonzero(labels == c)
      if len(members) < k:
        raise DataError(f'Class {c} has {len(members)} training examples, fewer '
                        f'than data.fewshot_k={k} per class.')
      picks.extend(rng.choice(members, k, replace=False))
  return [examples[i] for i in sorted(int(i) for i in picks)]
