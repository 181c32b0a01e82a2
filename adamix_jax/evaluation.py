"""Evaluation of a run: the experts merged for inference, every eval split scored once,
and model selection (which evaluation is the best so far)."""

from __future__ import annotations

import functools
import math
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from adamix_jax import fisher, inference, merging, sharding
from adamix_jax.adapters import AdaptationConfig
from adamix_jax.data import metrics as metrics_lib, pipeline
from adamix_jax.data.tasks import TaskSpec
from adamix_jax.runs import Run


def merge_for_inference(run: Run, params: Any) -> tuple[Any, AdaptationConfig]:
  """The experts merged into one adapter: the mean (AdaMix), or Fisher-weighted with the
  Fisher information estimated on `config.fisher_batches` training batches (a fixed,
  seed-determined sample, so evaluation is reproducible)."""
  config = run.config
  if config.merge == 'fisher':
    batches = pipeline.TrainIterator(run.train_set, config.batch_size, config.seed + 7,
                                     bucket_size=config.data.bucket_size,
                                     pad_to_max=config.data.pad_to_max)
    device_batches = (sharding.put_batch(next(batches), run.mesh)
                      for _ in range(config.fisher_batches))
    return fisher.fisher_merge(run.model, params, device_batches,
                                regression=run.task.is_regression)
  return merging.merge_experts(params, run.adaptation, lora_merge=config.lora_merge)


# One jitted predict for every evaluation: the model (hashable, compared by value) and the
# mode are static, so repeated evaluations of one run reuse the compiled function.
_predict = jax.jit(inference.predict, static_argnums=(0,),
                   static_argnames=('mode', 'expert', 'regression'))


def evaluate(run: Run, params: Any, *, step: int,
             merged: tuple[Any, AdaptationConfig] | None = None) -> dict[str, float]:
  """Scores every eval split over all of its examples exactly once.

  Args:
    params: the run's (mixture) parameters.
    merged: `merge_for_inference(run, params)` if already computed.
  """
  config, task, model = run.config, run.task, run.model
  mode = config.eval_mode if run.adaptation.is_mixture else 'merged'
  eval_model, eval_params = model, params
  if mode == 'merged' and run.adaptation.is_mixture:
    # Merged once per evaluation, outside the eval step.
    eval_params, merged_adaptation = merged or merge_for_inference(run, params)
    eval_model = model.clone(adaptation=merged_adaptation)
  fn = functools.partial(_predict, eval_model, mode=mode, regression=task.is_regression,
                         expert=config.eval_expert)
  eval_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1_000_003)
  results = {}
  for split, dataset in run.eval_sets.items():
    outputs, weights, labels = [], [], []
    for i, batch in enumerate(pipeline.eval_batches(
        dataset, config.eval_batch_size, bucket_size=config.data.bucket_size,
        pad_to_max=config.data.pad_to_max)):
      device_batch = sharding.put_batch(batch, run.mesh)
      out = fn(eval_params, device_batch, key=jax.random.fold_in(eval_key, i))
      outputs.append(np.asarray(multihost_utils.process_allgather(out, tiled=True)))
      weights.append(np.asarray(multihost_utils.process_allgather(
          device_batch['weights'], tiled=True)))
      labels.append(np.asarray(multihost_utils.process_allgather(
          device_batch['labels'], tiled=True)))
    out, w, y = np.concatenate(outputs), np.concatenate(weights), np.concatenate(labels)
    keep = w > 0
    preds = out[keep] if task.is_regression else out[keep].argmax(-1)
    split_metrics = metrics_lib.compute_metrics(task, preds, y[keep])
    prefix = '' if len(run.eval_sets) == 1 else f'{split}/'
    results.update({f'{prefix}{k}': float(v) for k, v in split_metrics.items()})
  logging.info('step %d eval (%s): %s', step, mode,
               ', '.join(f'{k} {v:.4f}' for k, v in results.items()))
  return results


def selection_value(task: TaskSpec, results: dict[str, float], num_splits: int) -> float:
  name = task.selection_metric
  if num_splits > 1:
    name = f'{task.selection_split}/{name}'
  return results[name]


def is_new_best(value: float, best: dict[str, Any]) -> bool:
  """Whether an evaluation's selection value replaces the best so far. The first evaluation
  always does, so that a best checkpoint exists even when every score is NaN (the Pearson
  correlation of constant predictions); a NaN never replaces a number, a number does
  replace a NaN."""
  if best['step'] < 0:
    return True
  if math.isnan(value):
    return False
  return math.isnan(best['value']) or value > best['value']
