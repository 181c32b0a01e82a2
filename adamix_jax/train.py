"""Training: the train state, the loss and the jitted data-parallel step, and the loop.

Data flows one way: config -> data -> model -> step -> metrics -> checkpoint/export.
Only the trainable parameters (adapters / LoRA / biases / head, per method) are in the
train state and the optimizer; the frozen backbone is a separate, replicated argument. The
run's set-up is `runs`, evaluation `evaluation`, checkpoints `checkpoints`, device layouts
`sharding`.
"""

# No `from __future__ import annotations`: clu reads the metric annotations at runtime.

import functools
import json
import math
import os
import time
from typing import Any

from absl import logging
from etils import epath
import flax
from clu import metrics as clu_metrics
import jax
import jax.numpy as jnp
import ml_collections
import optax
import orbax.checkpoint as ocp
from flax import traverse_util

from adamix_jax import (checkpoints, console, consistency, evaluation, methods, optim, runs,
                        sharding)
from adamix_jax.data import pipeline
from adamix_jax.metric_logs import JsonlWriter
from adamix_jax.model import Model, batch_inputs
from adamix_jax.routing import Routing


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or infinite."""


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training (donated to the step)."""

  step: jax.Array
  params: Any  # trainable parameters only
  opt_state: Any
  rng: jax.Array  # the run's base key; step keys are fold_in(rng, step)


@flax.struct.dataclass
class TrainMetrics(clu_metrics.Collection):
  loss: clu_metrics.Average.from_output('loss')
  task_loss: clu_metrics.Average.from_output('task_loss')
  consistency_loss: clu_metrics.Average.from_output('consistency_loss')
  grad_norm: clu_metrics.Average.from_output('grad_norm')
  learning_rate: clu_metrics.LastValue.from_output('learning_rate')


def create_train_state(params: Any, tx: optax.GradientTransformation, seed: int = 0
                       ) -> TrainState:
  """The state at step 0: the trainable parameters, the optimizer's initial state and the
  run's base key (derived from `seed`; every step's routing and dropout keys come from it)."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=jax.random.fold_in(jax.random.PRNGKey(seed), 1))


def abstract_state(state: TrainState) -> TrainState:
  """Shapes, dtypes and shardings of `state`, what `checkpoints.restore` fills in."""
  return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state)


def task_loss(logits: jax.Array, labels: jax.Array, regression: bool) -> jax.Array:
  if regression:
    return jnp.mean((logits[:, 0] - labels.astype(jnp.float32)) ** 2)
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def step_keys(rng: jax.Array, step: jax.Array | int) -> tuple[jax.Array, ...]:
  """A step's keys: routing of pass 1 and 2 (the consistency pass), dropout of pass 1 and 2.

  A function of the run's key and the step only: every device and every resumed run draws
  the same experts and dropout masks on a given step.
  """
  return tuple(jax.random.split(jax.random.fold_in(rng, step), 4))


def loss(params: Any, frozen: Any, batch: dict[str, jax.Array], keys: tuple[jax.Array, ...],
         *, model: Model, consistency_weight: float, regression: bool
         ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
  """The training objective: the task loss of a routed pass, plus `consistency_weight` times
  the consistency term between it and a second routed pass (skipped at weight 0).

  Args:
    params: the trainable parameters; frozen: the others.
    keys: `step_keys(rng, step)` (routing and dropout of each pass).
  Returns:
    (total, (task loss, consistency loss)).
  """
  route_1, route_2, drop_1, drop_2 = keys
  inputs = batch_inputs(batch)

  def forward(route_key, dropout_key):
    return model.apply({'params': methods.combine(params, frozen)}, *inputs,
                       routing=Routing(key=route_key), deterministic=False,
                       rngs={'dropout': dropout_key})

  logits = forward(route_1, drop_1)
  loss_task = task_loss(logits, batch['labels'], regression)
  loss_cons = jnp.zeros((), jnp.float32)
  if consistency_weight > 0:
    loss_cons = consistency.consistency_loss(logits, forward(route_2, drop_2),
                                             regression=regression)
  return loss_task + consistency_weight * loss_cons, (loss_task, loss_cons)


def train_step(state: TrainState, frozen: Any, batch: dict[str, jax.Array], *, model: Model,
               tx: optax.GradientTransformation, schedule: optax.Schedule,
               consistency_weight: float, regression: bool) -> tuple[TrainState, TrainMetrics]:
  """One optimisation step of `loss`.

  Args:
    state: the train state; donated (its buffers are reused for the result).
    frozen: the frozen parameters (not donated; never updated).
    batch: the global batch, sharded over the mesh's 'data' axis.
  Returns:
    The new state and this step's metrics. Routing and dropout keys come from
    fold_in(state.rng, state.step), so every device draws the same experts.
  """
  (total, (loss_task, loss_cons)), grads = jax.value_and_grad(loss, has_aux=True)(
      state.params, frozen, batch, step_keys(state.rng, state.step), model=model,
      consistency_weight=consistency_weight, regression=regression)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  metrics = TrainMetrics.single_from_model_output(
      loss=total, task_loss=loss_task, consistency_loss=loss_cons,
      grad_norm=optax.global_norm(grads), learning_rate=schedule(state.step))
  return new_state, metrics


def _check_finite(step: int, metrics: TrainMetrics) -> None:
  value = float(metrics.loss.compute())
  if not math.isfinite(value):
    raise NonFiniteLossError(
        f'Non-finite loss ({value}) at step {step}; training stopped. The last good checkpoint '
        'is kept in the workdir. Lower the learning rate or enable config.grad_clip_norm.')


class _Logger:
  """Train and eval scalars to TensorBoard / the console (clu) and to metrics.jsonl."""

  def __init__(self, workdir: epath.Path, is_main: bool, start_step: int, total_steps: int,
               every_steps: int):
    # clu's writers need TensorFlow: imported here, so that the step and evaluation import
    # on images without it.
    from clu import metric_writers, periodic_actions  # pylint: disable=import-outside-toplevel
    self.writer = metric_writers.create_default_writer(str(workdir), just_logging=not is_main)
    self.jsonl = JsonlWriter(workdir / 'metrics.jsonl', is_main)
    self.jsonl.truncate_after(start_step)
    # steps/s and uptime to TensorBoard (its console message is clu's, dropped by default).
    self.report = periodic_actions.ReportProgress(num_train_steps=total_steps,
                                                  writer=self.writer, every_steps=every_steps)
    self.progress = console.Progress(start_step, total_steps, active=is_main)

  def step(self, step: int) -> None:
    self.report(step)
    self.progress.step(step)

  def hparams(self, config: ml_collections.ConfigDict) -> None:
    self.writer.write_hparams({k: v for k, v in traverse_util.flatten_dict(
        config.to_dict(), sep='.').items() if isinstance(v, (int, float, str, bool))})

  def scalars(self, step: int, scalars: dict[str, float]) -> None:
    self.writer.write_scalars(step, scalars)
    self.jsonl.write(step, scalars)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike
                       ) -> dict[str, Any]:
  """Trains, evaluates every epoch (or `eval_every_steps`), keeps the best and the last
  checkpoint, exports the best merged model, and writes WORKDIR/results.json.

  Re-running with the same workdir resumes from its latest checkpoint and ends exactly as
  an uninterrupted run would.

  Returns:
    The results dict (also written to WORKDIR/results.json).
  """
  workdir = epath.Path(workdir)  # pathlib would turn gs://bucket into gs:/bucket, a local path
  is_main = jax.process_index() == 0
  run, trainable = runs.build_run(config, workdir)
  task = run.task
  iterator = pipeline.TrainIterator(run.train_set, config.batch_size, config.seed,
                                    bucket_size=config.data.bucket_size,
                                    pad_to_max=config.data.pad_to_max)
  total_steps = runs.total_train_steps(config, iterator.steps_per_epoch)
  eval_every = config.eval_every_steps or iterator.steps_per_epoch
  ckpt_every = config.checkpoint_every_steps or eval_every
  tx, schedule = optim.make_optimizer(config, total_steps, run.adaptation, trainable)
  meta = checkpoints.run_meta(config, task, run.adaptation)

  # Refuse a foreign checkpoint before anything is written.
  manager = checkpoints.checkpoint_manager(workdir / 'checkpoints',
                                           config.max_checkpoints_to_keep)
  # The best checkpoint is written synchronously (rarely, small for adapters); two managers
  # saving asynchronously at once would share the multi-host completion barrier.
  best_manager = checkpoints.checkpoint_manager(workdir / 'best', 1, asynchronous=False)
  saved_meta = checkpoints.read_meta(manager)
  if saved_meta is not None:
    checkpoints.check_meta(saved_meta, meta, workdir / 'checkpoints')

  state = create_train_state(trainable, tx, config.seed)
  state_shardings = sharding.tree_shardings(state, run.mesh, config.mesh.fsdp_min_size)
  state = jax.device_put(state, state_shardings)
  best = {'value': -math.inf, 'step': -1, 'metrics': {}}
  if saved_meta is not None:
    state, data_state, saved_meta = checkpoints.restore(manager, abstract_state(state))
    iterator.set_state(data_state)
    best = saved_meta.get('best', best)
    logging.info('Resumed from %s at step %d', workdir / 'checkpoints', int(state.step))

  start_step = int(state.step)
  logger = _Logger(workdir, is_main, start_step, total_steps, config.log_every_steps)
  if start_step == 0:
    logger.hparams(config)
  if is_main:
    (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2))

  step_fn = jax.jit(
      functools.partial(train_step, model=run.model, tx=tx, schedule=schedule,
                        consistency_weight=float(config.consistency_weight),
                        regression=task.is_regression),
      out_shardings=(state_shardings, sharding.replicated(run.mesh)), donate_argnums=(0,))
  train_start = time.time()
  previous_seconds = float(saved_meta.get('train_seconds', 0.0)) if saved_meta else 0.0

  def full_meta():
    return {**meta, 'best': best,
            'train_seconds': previous_seconds + time.time() - train_start}

  accumulated, pending = None, None
  last_results = None
  for step in range(start_step + 1, total_steps + 1):
    batch = sharding.put_batch(next(iterator), run.mesh)
    state, step_metrics = step_fn(state, run.frozen, batch)
    if pending is not None:  # check one step behind, so the host does not stall the device
      _check_finite(*pending)
    pending = (step, step_metrics)
    accumulated = step_metrics if accumulated is None else accumulated.merge(step_metrics)
    logger.step(step)
    if step % config.log_every_steps == 0 or step == total_steps:
      _check_finite(*pending)
      scalars = accumulated.compute()
      logger.scalars(step, {f'train/{k}': v for k, v in scalars.items()})
      logger.progress.log(step, scalars)
      accumulated = None
    is_eval = step % eval_every == 0 or step == total_steps
    if is_eval:
      _check_finite(*pending)
      last_results = evaluation.evaluate(run, methods.combine(state.params, run.frozen),
                                         step=step)
      logger.scalars(step, {f'eval/{k}': v for k, v in last_results.items()})
      value = evaluation.selection_value(task, last_results, len(run.eval_sets))
      if evaluation.is_new_best(value, best):
        best = {'value': value, 'step': step, 'metrics': last_results}
        manager.wait_until_finished()
        for old_step in best_manager.all_steps():  # a resumed run may replay a saved best
          best_manager.delete(old_step)
        checkpoints.save(best_manager, step, state, iterator.get_state(), full_meta())
    if is_eval or step % ckpt_every == 0 or step == total_steps:
      _check_finite(*pending)
      checkpoints.save(manager, step, state, iterator.get_state(), full_meta())
  logger.progress.close()
  manager.wait_until_finished()
  best_manager.wait_until_finished()
  train_time = previous_seconds + time.time() - train_start

  if last_results is None:  # resumed after the final step: evaluate the final state again
    last_results = evaluation.evaluate(run, methods.combine(state.params, run.frozen),
                                       step=total_steps)
  params_report = methods.parameter_report(methods.combine(state.params, run.frozen),
                                           config.method, run.adaptation)
  results = {
      'task': task.name, 'method': config.method, 'seed': config.seed,
      'checkpoint': str(config.model.checkpoint), 'eval_mode': config.eval_mode,
      'selection_metric': task.selection_metric, 'eval_splits': list(run.eval_sets),
      'final': {'step': total_steps, 'metrics': last_results},
      'best': {'step': best['step'], 'metrics': best['metrics']},
      'parameters': params_report, 'train_seconds': train_time,
  }
  if config.export:
    results['export'] = str(_export_best(run, best_manager, state, best, workdir, is_main))
  if is_main:
    (workdir / 'results.json').write_text(json.dumps(results, indent=2))
  logger.writer.flush()
  return results


def _export_best(run: runs.Run, best_manager: ocp.CheckpointManager, state: TrainState,
                 best: dict[str, Any], workdir: epath.Path, is_main: bool) -> epath.Path:
  """Exports the best checkpoint's model, merged for a mixture, to WORKDIR/export.

  Every process restores, merges and gathers (orbax's restore and the sharded computations
  are collective); the first one writes.
  """
  from adamix_jax import export  # pylint: disable=import-outside-toplevel
  best_state, _, _ = checkpoints.restore(best_manager, abstract_state(state))
  best_params = methods.combine(best_state.params, run.frozen)
  merged_adaptation = None
  if run.adaptation.is_mixture:
    best_params, merged_adaptation = evaluation.merge_for_inference(run, best_params)
  best_params = sharding.to_host(best_params)
  out = workdir / 'export'
  if is_main:
    export.export_run(best_params, out, config=run.config, model=run.model, task=run.task,
                      adaptation=run.adaptation, metrics=best['metrics'],
                      merged_adaptation=merged_adaptation)
  return out
