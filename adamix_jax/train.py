"""Training and evaluation: the jitted data-parallel step, the loop, checkpoints, logs.

Data flows one way: config -> data -> model -> step -> metrics -> checkpoint/export.
Only the trainable parameters (adapters / LoRA / biases / head, per method) are in the
train state and the optimizer; the frozen backbone is a separate, replicated argument.
"""

# No `from __future__ import annotations`: clu reads the metric annotations at runtime.

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any, Iterator

from absl import logging
from etils import epath
import flax
from clu import metrics as clu_metrics
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import traverse_util
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from adamix_jax import consistency, inference, merging, methods, optim, prompts
from adamix_jax.adapters import AdaptationConfig
from adamix_jax.data import metrics as metrics_lib, pipeline, readers
from adamix_jax.data.tasks import TaskSpec
from adamix_jax.encoder import ATTENTIONS, REMATS
from adamix_jax.model import POOLINGS, Model, batch_inputs, from_pretrained
from adamix_jax.routing import INFERENCE_MODES, Routing


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


# --------------------------------------------------------------------------------------
# Set-up
# --------------------------------------------------------------------------------------


def adaptation_from_config(config: ml_collections.ConfigDict) -> AdaptationConfig:
  fields = dict(config.adapter)
  fields['lora_targets'] = tuple(fields['lora_targets'])
  return methods.adaptation_for(config.method, **fields)


# XLA:CPU's default scheduler (concurrency-optimised) runs a rematerialised layer's
# recomputation as early as its inputs allow, inside the forward pass, so what remat should
# free stays live (the compiled step needs nearly as much memory as without remat); this flag
# selects the memory-ordered scheduler. Only read from XLA_FLAGS at start-up (as a
# per-program compiler option it is accepted and has no effect). Other backends schedule
# for memory themselves.
CPU_MEMORY_SCHEDULER = '--xla_cpu_enable_concurrency_optimized_scheduler=false'


def validate_config(config: ml_collections.ConfigDict, hidden_size: int | None = None,
                    num_devices: int | None = None, max_input_length: int | None = None
                    ) -> None:
  """Impossible settings fail before anything is trained or written. `hidden_size` and
  `max_input_length` (the model's position table) are checked once the model is known."""
  if config.method not in methods.METHODS:
    raise ValueError(f'Unknown method {config.method!r}; choose from {methods.METHODS}')
  a = config.adapter
  if config.method in ('adapter', 'adamix'):
    if a.adapter_size <= 0 or (hidden_size is not None and a.adapter_size >= hidden_size):
      raise ValueError(f'config.adapter.adapter_size={a.adapter_size} must be in '
                       f'[1, hidden size{f" {hidden_size}" if hidden_size else ""})')
  if config.method in ('adamix', 'adamix_lora') and a.num_experts < 1:
    raise ValueError(f'config.adapter.num_experts={a.num_experts} must be >= 1')
  if config.method in ('lora', 'adamix_lora') and a.lora_rank <= 0:
    raise ValueError(f'config.adapter.lora_rank={a.lora_rank} must be >= 1')
  if config.model.head not in ('classifier', 'prompt'):
    raise ValueError(f'config.model.head={config.model.head!r}: choose classifier or prompt')
  if config.model.pooling not in POOLINGS:
    raise ValueError(f'config.model.pooling={config.model.pooling!r}: choose '
                     f'{" or ".join(POOLINGS)}')
  if config.model.get('attention', 'standard') not in ATTENTIONS:
    raise ValueError(f'config.model.attention={config.model.attention!r}: choose '
                     f'{" or ".join(ATTENTIONS)}')
  if config.model.get('remat', 'none') not in REMATS:
    raise ValueError(f'config.model.remat={config.model.remat!r}: choose '
                     f'{", ".join(REMATS)}')
  if config.model.head == 'prompt' and config.method == 'head_only':
    raise ValueError('method=head_only with model.head=prompt trains nothing: the MLM head '
                     'stays frozen. Use head=classifier, or another method.')
  if config.get('expert_updates', 'official') not in optim.EXPERT_UPDATES:
    raise ValueError(f'config.expert_updates={config.expert_updates!r}: choose '
                     f'{", ".join(optim.EXPERT_UPDATES)}')
  if config.eval_mode not in INFERENCE_MODES:
    raise ValueError(f'config.eval_mode={config.eval_mode!r}: choose '
                     f'{", ".join(INFERENCE_MODES)}')
  if config.merge not in ('mean', 'fisher'):
    raise ValueError(f'config.merge={config.merge!r}: choose mean or fisher')
  if config.lora_merge not in merging.LORA_MERGES:
    raise ValueError(f'config.lora_merge={config.lora_merge!r}: choose '
                     f'{" or ".join(merging.LORA_MERGES)}')
  if (config.method == 'adamix_lora' and config.merge == 'fisher' and
      config.lora_merge == 'mean_delta'):
    raise ValueError("config.merge='fisher' weights each LoRA factor's elements separately; "
                     "it cannot give config.lora_merge='mean_delta' (the mean of the experts' "
                     "low-rank updates). Use merge='mean', or lora_merge='mean_factors'.")
  for name in ('batch_size', 'eval_batch_size'):
    size = config[name]
    if size <= 0:
      raise ValueError(f'config.{name}={size} must be positive')
    if num_devices and size % num_devices:
      raise ValueError(f'config.{name}={size} is not divisible by the {num_devices} devices '
                       'of the data-parallel mesh')
  if config.num_train_steps <= 0 and config.num_epochs <= 0:
    raise ValueError('Set config.num_epochs or config.num_train_steps to a positive value')
  length = config.data.max_length
  if length <= 0:
    raise ValueError(f'config.data.max_length={length} must be positive')
  if max_input_length is not None and length > max_input_length:
    raise ValueError(f'config.data.max_length={length} exceeds the {max_input_length} tokens '
                     "the checkpoint's position table holds (max_position_embeddings)")


BATCH_AXES = ('data', 'fsdp')
def make_mesh(config: ml_collections.ConfigDict) -> Mesh:
  """A ('data', 'fsdp') device mesh; the batch is split over both axes."""
  devices = jax.devices()
  fsdp = int(config.mesh.fsdp)
  if fsdp < 1 or len(devices) % fsdp:
    raise ValueError(f'config.mesh.fsdp={fsdp} must be >= 1 and divide the '
                     f'{len(devices)} devices')
  data = int(config.mesh.data) if config.mesh.data > 0 else len(devices) // fsdp
  if data * fsdp > len(devices):
    raise ValueError(f'config.mesh.data={data} x config.mesh.fsdp={fsdp} needs '
                     f'{data * fsdp} devices; {len(devices)} are visible')
  return Mesh(np.asarray(devices[:data * fsdp]).reshape(data, fsdp), BATCH_AXES)


def leaf_sharding(shape: tuple[int, ...], mesh: Mesh, min_size: int) -> NamedSharding:
  """FSDP: a leaf of at least `min_size` elements is split over 'fsdp' along its largest
  divisible dimension; everything else (and everything when fsdp == 1) is replicated."""
  n = mesh.shape['fsdp']
  if n == 1 or len(shape) < 2 or int(np.prod(shape)) < min_size:
    return NamedSharding(mesh, P())
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % n == 0:
      spec = [None] * len(shape)
      spec[dim] = 'fsdp'
      return NamedSharding(mesh, P(*spec))
  return NamedSharding(mesh, P())


def tree_shardings(tree: Any, mesh: Mesh, min_size: int) -> Any:
  return jax.tree_util.tree_map(lambda x: leaf_sharding(np.shape(x), mesh, min_size), tree)


# --------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------


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


def train_step(state: TrainState, frozen: Any, batch: dict[str, jax.Array], *, model: Model,
               tx: optax.GradientTransformation, schedule: optax.Schedule,
               consistency_weight: float, regression: bool) -> tuple[TrainState, TrainMetrics]:
  """One optimisation step.

  Args:
    state: the train state; donated (its buffers are reused for the result).
    frozen: the frozen parameters (not donated; never updated).
    batch: the global batch, sharded over the mesh's 'data' axis.
  Returns:
    The new state and this step's metrics. Routing and dropout keys come from
    fold_in(state.rng, state.step), so every device draws the same experts.
  """
  route_1, route_2, drop_1, drop_2 = step_keys(state.rng, state.step)
  inputs = batch_inputs(batch)

  def forward(params, route_key, dropout_key):
    return model.apply({'params': methods.combine(params, frozen)}, *inputs,
                       routing=Routing(key=route_key), deterministic=False,
                       rngs={'dropout': dropout_key})

  def loss_fn(params):
    logits = forward(params, route_1, drop_1)
    loss_task = task_loss(logits, batch['labels'], regression)
    loss_cons = jnp.zeros((), jnp.float32)
    if consistency_weight > 0:
      logits_2 = forward(params, route_2, drop_2)
      loss_cons = consistency.consistency_loss(logits, logits_2, regression=regression)
    return loss_task + consistency_weight * loss_cons, (loss_task, loss_cons)

  (loss, (loss_task, loss_cons)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  metrics = TrainMetrics.single_from_model_output(
      loss=loss, task_loss=loss_task, consistency_loss=loss_cons,
      grad_norm=optax.global_norm(grads), learning_rate=schedule(state.step))
  return new_state, metrics


# --------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Run:
  """What train_and_evaluate builds once and its helpers share."""

  config: ml_collections.ConfigDict
  workdir: epath.Path  # local, or gs:// on TPU pods
  task: TaskSpec
  model: Model
  adaptation: AdaptationConfig
  mesh: Mesh
  frozen: Any
  eval_sets: dict[str, pipeline.TokenizedDataset]
  train_set: pipeline.TokenizedDataset
  tokenizer: Any


def _replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _put_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  return pipeline.shard_batch(batch, mesh, BATCH_AXES)


def _run_meta(config: ml_collections.ConfigDict, run_task: TaskSpec,
              adaptation: AdaptationConfig) -> dict[str, Any]:
  """What a workdir's checkpoint must agree with to be resumed."""
  return {
      'checkpoint': str(config.model.checkpoint),
      'peft_adapter': str(config.model.peft_adapter),
      'method': config.method,
      'adaptation': adaptation.to_json(),
      'task': run_task.name,
      'num_labels': run_task.num_labels,
      # The optimizer state's layout depends on it.
      'expert_updates': config.get('expert_updates', 'official'),
  }


def _check_meta(saved: dict[str, Any], current: dict[str, Any], where: epath.Path) -> None:
  diffs = [f'{k}: checkpoint has {saved.get(k)!r}, config has {v!r}'
           for k, v in current.items() if saved.get(k) != v]
  if diffs:
    raise ValueError(
        f'The checkpoint in {where} was made by a different run and cannot be resumed: ' +
        '; '.join(diffs) + '. Use another --workdir (nothing was overwritten).')


def merge_for_inference(run: _Run, params: Any) -> tuple[Any, AdaptationConfig]:
  """The experts merged into one adapter: the mean (AdaMix), or Fisher-weighted with the
  Fisher information estimated on `config.fisher_batches` training batches (a fixed,
  seed-determined sample, so evaluation is reproducible)."""
  config = run.config
  if config.merge == 'fisher':
    batches = pipeline.TrainIterator(run.train_set, config.batch_size, config.seed + 7,
                                     bucket_size=config.data.bucket_size,
                                     pad_to_max=config.data.pad_to_max)
    device_batches = (_put_batch(next(batches), run.mesh)
                      for _ in range(config.fisher_batches))
    return merging.fisher_merge(run.model, params, device_batches,
                                regression=run.task.is_regression)
  return merging.merge_experts(params, run.adaptation, lora_merge=config.lora_merge)


# One jitted predict for every evaluation: the model (hashable, compared by value) and the
# mode are static, so repeated evaluations of one run reuse the compiled function.
_predict = jax.jit(inference.predict, static_argnums=(0,),
                   static_argnames=('mode', 'expert', 'regression'))


def evaluate(run: _Run, params: Any, *, step: int,
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
      device_batch = _put_batch(batch, run.mesh)
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
  logging.info('step %d eval (%s): %s', step, mode, results)
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


def to_host(tree: Any) -> Any:
  """Numpy copies of every leaf, gathering those spread over several processes (a
  collective there: every process calls it with the same tree)."""
  def leaf(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
  return jax.tree_util.tree_map(leaf, tree)


class _JsonlWriter:
  """Every logged scalar as one JSON line: {"step": s, "name": value, ...}."""

  def __init__(self, path: epath.Path, active: bool):
    self.path, self.active = path, active

  def truncate_after(self, step: int) -> None:
    """Drops lines of steps a resumed run will log again."""
    if not (self.active and self.path.exists()):
      return
    kept = [line for line in self.path.read_text().splitlines()
            if line.strip() and json.loads(line)['step'] <= step]
    self.path.write_text(''.join(line + '\n' for line in kept))

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if self.active:
      with self.path.open('a') as f:
        f.write(json.dumps({'step': int(step), **{k: float(v) for k, v in scalars.items()}})
                + '\n')


def _check_finite(step: int, metrics: TrainMetrics) -> None:
  loss = float(metrics.loss.compute())
  if not math.isfinite(loss):
    raise NonFiniteLossError(
        f'Non-finite loss ({loss}) at step {step}; training stopped. The last good checkpoint '
        'is kept in the workdir. Lower the learning rate or enable config.grad_clip_norm.')


def data_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """config.data, with a few-shot split seed of 0 meaning the run's seed (so a sweep over
  seeds walks over the <K>-<seed> splits, as the few-shot protocol does)."""
  data = ml_collections.ConfigDict(config.data.to_dict())
  if data.source in ('fewshot_list', 'lmbff', 'sample') and not data.get('fewshot_seed'):
    data.fewshot_seed = int(config.seed)
  return data


def _load_data(config, tokenizer) -> tuple[TaskSpec, pipeline.TokenizedDataset,
                                           dict[str, pipeline.TokenizedDataset],
                                           tuple[int, ...]]:
  """Reads and tokenizes every split; returns also the prompt's label-word ids (or ())."""
  data_cfg = data_config(config)
  task, train_examples = readers.load_examples(data_cfg, 'train')
  word_ids: tuple[int, ...] = ()
  if config.model.head == 'prompt':
    spec = prompts.PromptSpec.from_config(config.prompt)
    word_ids = prompts.label_word_ids(spec, task, tokenizer)
    tokenize = functools.partial(prompts.tokenize_prompt_examples, spec=spec)
  else:
    tokenize = pipeline.tokenize_examples
  eval_sets = {}
  for split in task.eval_splits:
    _, examples = readers.load_examples(data_cfg, split)
    eval_sets[split] = tokenize(examples, tokenizer=tokenizer,
                                max_length=config.data.max_length)
  train_set = tokenize(train_examples, tokenizer=tokenizer, max_length=config.data.max_length)
  return task, train_set, eval_sets, word_ids


def build_run(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> tuple[_Run, Any]:
  """Loads data and the pretrained model; returns the run and the initial parameters."""
  mesh = make_mesh(config)
  validate_config(config, num_devices=mesh.size)
  adaptation = adaptation_from_config(config)
  from adamix_jax import hf_checkpoint  # pylint: disable=import-outside-toplevel
  model_dir = hf_checkpoint.resolve_model_dir(config.model.checkpoint)
  tokenizer = pipeline.load_tokenizer(model_dir)
  task, train_set, eval_sets, word_ids = _load_data(config, tokenizer)
  model, params, report = from_pretrained(
      model_dir, adaptation=adaptation, head=config.model.head, num_labels=task.num_labels,
      label_word_ids=word_ids, pooling=config.model.pooling,
      dtype=jnp.dtype(config.model.dtype), attention=config.model.get('attention', 'standard'),
      remat=config.model.get('remat', 'none'),
      rng=jax.random.PRNGKey(config.seed), allow_pickle=config.model.allow_pickle)
  if config.model.peft_adapter:
    from adamix_jax.interop import peft_io  # pylint: disable=import-outside-toplevel
    params = peft_io.overlay_peft(params, adaptation, model.config,
                                  peft_io.read_peft(config.model.peft_adapter))
  validate_config(config, hidden_size=model.config.hidden_size, num_devices=mesh.size,
                  max_input_length=model.config.max_input_length)
  logging.info('%s', report.summary())
  if model.attention == 'fused' and model.config.attention_probs_dropout_prob > 0:
    logging.warning('config.model.attention=fused: the checkpoint\'s attention_probs_dropout_prob'
                    '=%s is not applied (fused attention has no dropout on the attention '
                    'probabilities); the other dropouts are.',
                    model.config.attention_probs_dropout_prob)
  if (model.remat != 'none' and jax.default_backend() == 'cpu'
      and CPU_MEMORY_SCHEDULER not in os.environ.get('XLA_FLAGS', '')):
    logging.warning('config.model.remat=%s on CPU frees little memory unless XLA_FLAGS has %s '
                    'when the process starts: the default CPU scheduler runs the '
                    'recomputation inside the forward pass.', model.remat, CPU_MEMORY_SCHEDULER)
  mask = methods.trainable_mask(params, config.method,
                                train_layer_norm=config.train_layer_norm)
  trainable, frozen = methods.partition(params, mask)
  frozen = jax.device_put(frozen, tree_shardings(frozen, mesh, config.mesh.fsdp_min_size))
  run = _Run(config=config, workdir=epath.Path(workdir), task=task, model=model,
             adaptation=adaptation, mesh=mesh, frozen=frozen, eval_sets=eval_sets,
             train_set=train_set, tokenizer=tokenizer)
  return run, trainable


def total_train_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  return int(config.num_epochs * steps_per_epoch)


def _checkpoint_manager(path: epath.Path, max_to_keep: int, *, asynchronous: bool = True
                        ) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      path.absolute(), item_names=('state', 'data', 'meta'),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=asynchronous))


def _save(manager: ocp.CheckpointManager, step: int, state: TrainState, data_state: dict,
          meta: dict) -> None:
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
      meta=ocp.args.JsonSave(meta)), force=True)


def restore_checkpoint(manager: ocp.CheckpointManager, abstract_state: TrainState,
                       step: int | None = None) -> tuple[TrainState, dict, dict]:
  step = manager.latest_step() if step is None else step
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore(),
      meta=ocp.args.JsonRestore()))
  return restored['state'], restored['data'], restored['meta']


def read_meta(manager: ocp.CheckpointManager) -> dict | None:
  step = manager.latest_step()
  if step is None:
    return None
  return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']


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
  run, trainable = build_run(config, workdir)
  task = run.task
  iterator = pipeline.TrainIterator(run.train_set, config.batch_size, config.seed,
                                    bucket_size=config.data.bucket_size,
                                    pad_to_max=config.data.pad_to_max)
  steps_per_epoch = iterator.steps_per_epoch
  total_steps = total_train_steps(config, steps_per_epoch)
  eval_every = config.eval_every_steps or steps_per_epoch
  ckpt_every = config.checkpoint_every_steps or eval_every
  tx, schedule = optim.make_optimizer(config, total_steps, run.adaptation, trainable)
  meta = _run_meta(config, task, run.adaptation)

  # Refuse a foreign checkpoint before anything is written.
  manager = _checkpoint_manager(workdir / 'checkpoints', config.max_checkpoints_to_keep)
  # The best checkpoint is written synchronously (rarely, small for adapters); two managers
  # saving asynchronously at once would share the multi-host completion barrier.
  best_manager = _checkpoint_manager(workdir / 'best', 1, asynchronous=False)
  saved_meta = read_meta(manager)
  if saved_meta is not None:
    # Checkpoints written before expert_updates existed hold the 'frozen' optimizer state.
    legacy = {'expert_updates': 'frozen'}
    _check_meta({k: saved_meta.get(k, legacy.get(k)) for k in meta}, meta,
                workdir / 'checkpoints')

  state = TrainState(step=jnp.zeros((), jnp.int32), params=trainable,
                     opt_state=tx.init(trainable),
                     rng=jax.random.fold_in(jax.random.PRNGKey(config.seed), 1))
  state_shardings = tree_shardings(state, run.mesh, config.mesh.fsdp_min_size)
  state = jax.device_put(state, state_shardings)
  best = {'value': -math.inf, 'step': -1, 'metrics': {}}
  if saved_meta is not None:
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state)
    state, data_state, saved_meta = restore_checkpoint(manager, abstract)
    iterator.set_state(data_state)
    best = saved_meta.get('best', best)
    logging.info('Resumed from %s at step %d', workdir / 'checkpoints', int(state.step))

  # clu's writers need TensorFlow: imported here, so that the step and evaluation import
  # on images without it.
  from clu import metric_writers, periodic_actions  # pylint: disable=import-outside-toplevel
  writer = metric_writers.create_default_writer(str(workdir), just_logging=not is_main)
  jsonl = _JsonlWriter(workdir / 'metrics.jsonl', is_main)
  start_step = int(state.step)
  jsonl.truncate_after(start_step)
  if start_step == 0:
    writer.write_hparams({k: v for k, v in traverse_util.flatten_dict(
        config.to_dict(), sep='.').items() if isinstance(v, (int, float, str, bool))})
  if is_main:
    (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2))

  step_fn = jax.jit(
      functools.partial(train_step, model=run.model, tx=tx, schedule=schedule,
                        consistency_weight=float(config.consistency_weight),
                        regression=task.is_regression),
      out_shardings=(state_shardings, _replicated(run.mesh)), donate_argnums=(0,))
  progress = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer,
                                             every_steps=config.log_every_steps)

  def log(step, scalars):
    writer.write_scalars(step, scalars)
    jsonl.write(step, scalars)

  train_start = time.time()
  previous_seconds = float(saved_meta.get('train_seconds', 0.0)) if saved_meta else 0.0

  def full_meta():
    return {**meta, 'best': best,
            'train_seconds': previous_seconds + time.time() - train_start}

  accumulated, pending = None, None
  last_results = None
  for step in range(start_step + 1, total_steps + 1):
    batch = _put_batch(next(iterator), run.mesh)
    state, step_metrics = step_fn(state, run.frozen, batch)
    if pending is not None:  # check one step behind, so the host does not stall the device
      _check_finite(*pending)
    pending = (step, step_metrics)
    accumulated = step_metrics if accumulated is None else accumulated.merge(step_metrics)
    progress(step)
    if step % config.log_every_steps == 0 or step == total_steps:
      _check_finite(*pending)
      log(step, {f'train/{k}': v for k, v in accumulated.compute().items()})
      accumulated = None
    is_eval = step % eval_every == 0 or step == total_steps
    if is_eval:
      _check_finite(*pending)
      last_results = evaluate(run, methods.combine(state.params, run.frozen), step=step)
      log(step, {f'eval/{k}': v for k, v in last_results.items()})
      value = selection_value(task, last_results, len(run.eval_sets))
      if is_new_best(value, best):
        best = {'value': value, 'step': step, 'metrics': last_results}
        manager.wait_until_finished()
        for old_step in best_manager.all_steps():  # a resumed run may replay a saved best
          best_manager.delete(old_step)
        _save(best_manager, step, state, iterator.get_state(), full_meta())
    if is_eval or step % ckpt_every == 0 or step == total_steps:
      _check_finite(*pending)
      _save(manager, step, state, iterator.get_state(), full_meta())
  manager.wait_until_finished()
  best_manager.wait_until_finished()
  train_time = previous_seconds + time.time() - train_start

  if last_results is None:  # resumed after the final step: evaluate the final state again
    last_results = evaluate(run, methods.combine(state.params, run.frozen), step=total_steps)
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
    from adamix_jax import export  # pylint: disable=import-outside-toplevel
    # Every process restores, merges and gathers (orbax's restore and the sharded
    # computations are collective); the first one writes.
    best_state, _, _ = restore_checkpoint(
        best_manager, jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state))
    best_params = methods.combine(best_state.params, run.frozen)
    merged_adaptation = None
    if run.adaptation.is_mixture:
      best_params, merged_adaptation = merge_for_inference(run, best_params)
    best_params = to_host(best_params)
    if is_main:
      export.export_run(run, best_params, workdir / 'export', metrics=best['metrics'],
                        merged_adaptation=merged_adaptation)
    results['export'] = str(workdir / 'export')
  if is_main:
    (workdir / 'results.json').write_text(json.dumps(results, indent=2))
  writer.flush()
  return results
