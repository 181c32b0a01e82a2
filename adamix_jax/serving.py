"""Many tasks over one frozen backbone: every example of a batch runs with its own task's
adapter (or LoRA factors) and head, in one jitted forward pass.

`MultiTaskPredictor` loads N exports (`export.load_export`) that share a base checkpoint.
It keeps one copy of the tensors no export trained (the frozen encoder) and stacks what the
exports trained (bottleneck adapters, LoRA factors, heads, any other trained tensor) along
a task axis, each zero-padded to the largest shape among the tasks. The forward pass takes
a task index per example, gathers each example's slice of the stacked tensors and runs the
encoder on it (`jax.vmap` over the examples): an example sees exactly the model its
export describes.

Why zero padding is exact: an adapter of width r inside a slot of width R > r has zero
down columns and up rows, whose hidden units are act(0) = 0 and add nothing; a task
without an adapter (LoRA-only, BitFit) has an all-zero adapter, `h + 0 = h`; LoRA factors
of rank r padded to R add nothing, and each task's alpha / r is folded into its B; a head
with C < Cmax classes has zero logits in the extra columns, which are masked out of the
softmax.

The encoder takes one adaptation kind per model (`adapters.AdaptationConfig`), and a batch
mixing bottleneck-adapter and LoRA tasks needs both: the model is built with the union of
the bottleneck adapters, and the LoRA factors, passed in the parameter tree beside each
projection's frozen kernel, are applied by intercepting the projections
(`flax.linen.intercept_methods`) with the library's own `adapters.LoRADense`.

`RequestBatcher` groups requests of many clients into one fixed batch size, so that a
server compiles one shape per length bucket and never recompiles under load.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from adamix_jax import export, predict
from adamix_jax.adapters import LORA_PARAMS, LORA_TARGETS, AdaptationConfig, LoRADense
from adamix_jax.data import pipeline
from adamix_jax.data.formats import Example
from adamix_jax.model import ClassificationHead, MLMHead, Model

HEAD_MODULES = ('classifier', 'mlm_head')


class ServingError(ValueError):
  """Exports that cannot be served together, or a request naming an unknown task."""


@dataclasses.dataclass(frozen=True)
class ServedTask:
  """One export served by a `MultiTaskPredictor`.

  Attributes:
    name: how requests name the task.
    export_dir: the export directory.
    predictor: the export's single-task `predict.Predictor` (its info, task and metrics;
      its model is never loaded here).
    method: the method the run trained (`adamix`, `adapter`, `lora`, ...).
    size_bytes: the bytes of the tensors the export adds to the backbone.
  """
  name: str
  export_dir: Path
  predictor: predict.Predictor
  method: str
  size_bytes: int

  @property
  def info(self) -> dict[str, Any]:
    return self.predictor.info

  @property
  def labels(self) -> tuple[str, ...] | None:
    return self.predictor.task.labels

  @property
  def text_columns(self) -> tuple[str, ...]:
    return self.predictor.task.text_columns

  def describe(self) -> dict[str, Any]:
    """What `GET /tasks` shows of the task."""
    return {'name': self.name, 'task': self.info['task'], 'method': self.method,
            'labels': None if self.labels is None else list(self.labels),
            'regression': self.labels is None, 'text_columns': list(self.text_columns),
            'head': self.info.get('head', 'classifier'), 'size_bytes': self.size_bytes,
            'max_length': self.info['max_length']}


def base_key(checkpoint: str) -> str:
  """What identifies a base checkpoint: a local directory by its real path, else the name."""
  path = Path(checkpoint).expanduser()
  return os.path.realpath(path) if path.is_dir() else str(checkpoint)


def named_exports(entries: Sequence[str | os.PathLike]) -> dict[str, str | os.PathLike]:
  """{task name: export directory} of `DIR` or `NAME=DIR` entries; a plain `DIR` is named
  by its export's task."""
  named: dict[str, str | os.PathLike] = {}
  for entry in entries:
    name, sep, path = str(entry).partition('=')
    if not sep:
      name, path = export.read_info(entry)['task'], entry
    if not name or not str(path):
      raise ServingError(f'{entry!r}: expected DIR or NAME=DIR.')
    if name in named:
      raise ServingError(f'{path} and {named[name]} both serve task {name!r}: name them '
                         '(NAME=DIR).')
    named[name] = path
  return named


def _lora_interceptor(lora: AdaptationConfig):
  """Applies LoRA to every projection whose parameters carry `lora_a` / `lora_b`."""

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if (not isinstance(module, LoRADense) or context.method_name != '__call__'
        or module.config == lora):  # the LoRADense applied below
      return next_fun(*args, **kwargs)
    params = module.variables.get('params', {})
    if LORA_PARAMS[0] not in params:
      return next_fun(*args, **kwargs)
    dense = LoRADense(module.features, lora, module.layer, module.site, module.dtype,
                      parent=None)
    return dense.apply({'params': dict(params)}, *args, **kwargs)

  return interceptor


def _padded(value: np.ndarray, shape: Sequence[int]) -> np.ndarray:
  out = np.zeros(shape, np.float32)
  out[tuple(slice(0, n) for n in value.shape)] = value
  return out


class MultiTaskPredictor:
  """N exports over one copy of their shared base checkpoint, predicted in mixed batches."""

  def __init__(self, exports: Sequence[str | os.PathLike] | dict[str, str | os.PathLike], *,
               base_checkpoint: str | None = None, batch_size: int = 64,
               bucket_size: int = 32):
    """Args:
      exports: export directories (each task named by its export's task), or
        {name: export directory}.
      base_checkpoint: where the shared base checkpoint lives now, if not where the
        exports say.
      batch_size: rows per forward pass (every pass has this many; short ones are padded),
        split over the local devices.
      bucket_size: batches are padded to a multiple of this many tokens.

    Raises:
      ServingError: the exports do not share a base checkpoint, two share a name, or their
        adapters use different activations.
    """
    if not isinstance(exports, dict):
      exports = named_exports(exports)
    if not exports:
      raise ServingError('No exports to serve.')
    self.mesh = Mesh(np.asarray(jax.local_devices()), ('data',))
    if batch_size <= 0 or batch_size % self.mesh.size:
      raise ValueError(f'batch_size={batch_size} must be a positive multiple of the '
                       f'{self.mesh.size} local devices.')
    self.batch_size, self.bucket_size = batch_size, bucket_size
    self.base_checkpoint = base_checkpoint
    predictors = {name: predict.Predictor(d, base_checkpoint=base_checkpoint)
                  for name, d in exports.items()}
    first_name = next(iter(predictors))
    first = predictors[first_name]
    base = base_checkpoint or first.info['base_checkpoint']
    for name, p in predictors.items():
      own = base_checkpoint or p.info['base_checkpoint']
      if base_key(own) != base_key(base):
        raise ServingError(
            f'{p.export_dir}: its base checkpoint {own!r} is not {base!r}, the base of '
            f'{first.export_dir}; exports served together must share one base checkpoint.')
    self.base = base
    self._predictors = predictors
    self.tasks: dict[str, ServedTask] = {}  # filled by _load

  # -- loading -----------------------------------------------------------------------------

  def load(self) -> 'MultiTaskPredictor':
    """Loads the base checkpoint and the exports' tensors (done on first use anyway)."""
    _ = self._loaded
    return self

  @functools.cached_property
  def _loaded(self) -> dict[str, Any]:
    from adamix_jax import hf_checkpoint  # pylint: disable=import-outside-toplevel
    shared: dict[tuple[str, ...], np.ndarray] = {}
    per_task: list[dict[tuple[str, ...], np.ndarray]] = []
    adaptations, models = [], []
    for name, p in self._predictors.items():
      model, params, info = export.load_export(p.export_dir,
                                               base_checkpoint=self.base_checkpoint)
      flat = traverse_util.flatten_dict(params)
      trained = {tuple(k.split('/')) for k in info['shapes']}
      adaptation = model.adaptation
      if adaptation.is_mixture:
        raise ServingError(f'{p.export_dir}: holds an unmerged mixture ({adaptation.kind}); '
                           're-export the run (experiments.export) to serve it.')
      tensors = {}
      for path in trained:
        value = np.asarray(flat[path], np.float32)
        if path[-1] == LORA_PARAMS[1]:  # fold alpha / r into B: the union LoRA scales by 1
          value = value * (adaptation.lora_alpha / adaptation.lora_rank)
        tensors[path] = value
      for path, value in flat.items():
        if path not in trained and path not in shared:
          shared[path] = np.asarray(value)
      per_task.append(tensors)
      adaptations.append(adaptation)
      models.append(model)
      size = sum(int(np.prod(s)) * 4 for s in info['shapes'].values())
      self.tasks[name] = ServedTask(name, p.export_dir, p, info['method'], size)
      del params, flat

    config = models[0].config
    bottleneck = [a for a in adaptations if a.uses_bottleneck]
    if len({a.adapter_activation for a in bottleneck}) > 1:
      raise ServingError('The exports\' adapters use different activations (' + ', '.join(
          f'{n}: {a.adapter_activation}' for n, a in zip(self.tasks, adaptations)
          if a.uses_bottleneck) + '); serve them separately.')
    union = AdaptationConfig()
    if bottleneck:
      union = AdaptationConfig(
          kind='adapter', adapter_size=max(a.adapter_size for a in bottleneck),
          placement='houlsby' if any(a.placement == 'houlsby' for a in bottleneck) else 'ffn',
          adapter_activation=bottleneck[0].adapter_activation)
    lora_users = [a for a in adaptations if a.uses_lora]
    rank = max([a.lora_rank for a in lora_users], default=1)
    lora = AdaptationConfig(kind='lora', lora_rank=rank, lora_alpha=float(rank),
                            lora_targets=tuple(t for t in LORA_TARGETS if any(
                                t in a.lora_targets for a in lora_users)) or ('query',))
    encoder_model = Model(config, union, head='none')
    from adamix_jax.model import init_params  # pylint: disable=import-outside-toplevel
    skeleton = traverse_util.flatten_dict(
        jax.eval_shape(lambda: init_params(encoder_model, jax.random.PRNGKey(0))))

    # The stacked paths: whatever any export trained. Each task's slice is its tensor, the
    # base's value where it trained none (a LayerNorm another task trained), else zeros.
    stacked_paths = sorted(set().union(*per_task))
    stacked = {}
    for path in stacked_paths:
      if path[0] == 'backbone' and path[-1] not in LORA_PARAMS and path not in skeleton:
        raise ServingError(f'A tensor {"/".join(path)} has no place in the served model.')
      shapes = [t[path].shape for t in per_task if path in t]
      if path in skeleton:
        shapes.append(skeleton[path].shape)
      if path[-1] == LORA_PARAMS[0]:  # every site's factors padded to the largest rank
        shapes.append((0, rank))
      elif path[-1] == LORA_PARAMS[1]:
        shapes.append((rank, 0))
      shape = tuple(max(s[i] for s in shapes) for i in range(len(shapes[0])))
      stacked[path] = np.stack([_padded(t.get(path, shared.get(path, np.zeros(0))), shape)
                                if path in t or path in shared else np.zeros(shape, np.float32)
                                for t in per_task])
    frozen = {}
    for path, value in shared.items():
      if path in stacked:
        continue
      if path[0] == 'backbone' and path in skeleton:
        frozen[path] = value
      elif path[0] == 'mlm_head':
        frozen[path] = value
    for path, leaf in skeleton.items():  # union adapter slots no export trained, the pooler
      if path not in frozen and path not in stacked:
        frozen[path] = np.zeros(leaf.shape, leaf.dtype)

    num_labels = [max(m.num_labels, 1) for m in models]
    c_max = max(max(num_labels), max(len(m.label_word_ids) for m in models))
    variants = sorted({(m.head, m.pooling) for m in models})
    label_words = np.zeros((len(models), c_max), np.int32)
    for t, m in enumerate(models):
      label_words[t, :len(m.label_word_ids)] = m.label_word_ids
    regression = np.asarray([self.tasks[n].labels is None for n in self.tasks])
    replicated = NamedSharding(self.mesh, P())
    arrays = jax.device_put({
        'frozen': {'/'.join(k): v for k, v in frozen.items()},
        'stacked': {'/'.join(k): v for k, v in stacked.items()},
        'num_labels': np.asarray(num_labels, np.int32),
        'regression': regression,
        'label_words': label_words,
        'variant': np.asarray([variants.index((m.head, m.pooling)) for m in models], np.int32),
    }, replicated)
    forward = jax.jit(functools.partial(
        _forward, encoder_model=encoder_model, lora=lora if lora_users else None,
        variants=tuple(variants), num_classes=c_max))
    tokenizer = pipeline.load_tokenizer(hf_checkpoint.resolve_model_dir(self.base))
    return {'arrays': arrays, 'forward': forward, 'tokenizer': tokenizer,
            'max_length': max(m['max_length'] for m in (t.info for t in self.tasks.values())),
            'num_classes': c_max}

  # -- prediction --------------------------------------------------------------------------

  @property
  def task_names(self) -> list[str]:
    return list(self._predictors)

  def task(self, name: str) -> ServedTask:
    _ = self._loaded
    try:
      return self.tasks[name]
    except KeyError:
      raise ServingError(f'unknown task {name!r}; serving: {", ".join(self.tasks)}') from None

  def tokenize(self, items: Sequence[tuple[str, Example]]) -> tuple[pipeline.TokenizedDataset,
                                                                    np.ndarray]:
    """(one dataset of the items in order, int32 [n] their task indices); each item is
    tokenized as its own export's predictor does (its max length, its prompt)."""
    loaded = self._loaded
    names = list(self.tasks)
    task_ids = np.asarray([names.index(self.task(name).name) for name, _ in items], np.int32)
    rows: list[tuple[np.ndarray, np.ndarray, int]] = [None] * len(items)  # type: ignore
    pad_id = None
    for t, name in enumerate(names):
      where = np.flatnonzero(task_ids == t)
      if not len(where):
        continue
      data = predict.tokenize(self.tasks[name].info, [items[i][1] for i in where],
                              loaded['tokenizer'])
      pad_id = data.pad_id
      for j, i in enumerate(where):
        start, stop = data.offsets[j], data.offsets[j + 1]
        rows[i] = (data.input_ids[start:stop], data.token_type_ids[start:stop],
                   0 if data.mask_positions is None else int(data.mask_positions[j]))
    lengths = np.asarray([len(r[0]) for r in rows], np.int64)
    dataset = pipeline.TokenizedDataset(
        input_ids=np.concatenate([r[0] for r in rows]).astype(np.int32),
        token_type_ids=np.concatenate([r[1] for r in rows]).astype(np.int32),
        offsets=np.concatenate([[0], np.cumsum(lengths)]),
        labels=np.zeros(len(rows), np.int32), pad_id=int(pad_id),
        max_length=loaded['max_length'],
        mask_positions=np.asarray([r[2] for r in rows], np.int32))
    return dataset, task_ids

  def predict_items(self, items: Sequence[tuple[str, Example]]) -> list[np.ndarray]:
    """Outputs for (task name, example) pairs in any mix of tasks, in their order: per
    item, the probabilities [C] of its task's labels, or a regression score []."""
    if not items:
      return []
    dataset, task_ids = self.tokenize(items)
    outputs = []
    for k, batch in enumerate(pipeline.eval_batches(
        dataset, self.batch_size, bucket_size=self.bucket_size, process_index=0,
        process_count=1)):
      keep = batch.pop('weights') > 0
      del batch['labels']
      ids = np.zeros(self.batch_size, np.int32)
      chunk = task_ids[k * self.batch_size:(k + 1) * self.batch_size]
      ids[:len(chunk)] = chunk
      batch['task'] = ids
      outputs.append(np.asarray(self.forward(batch))[keep])
    outputs = np.concatenate(outputs)
    names = list(self.tasks)
    result = []
    for row, t in zip(outputs, task_ids):
      labels = self.tasks[names[t]].labels
      result.append(np.float32(row[0]) if labels is None else row[:len(labels)])
    return result

  def forward(self, batch: dict[str, np.ndarray]) -> jax.Array:
    """The jitted forward pass on one tokenized batch of `batch_size` rows (input_ids,
    attention_mask, token_type_ids, mask_positions, and 'task': each row's task index in
    `task_names` order); outputs [batch_size, Cmax] stay on the device."""
    loaded = self._loaded
    return loaded['forward'](loaded['arrays'], pipeline.shard_batch(batch, self.mesh))

  def predict(self, task: str, examples: Sequence[Example]) -> np.ndarray:
    """One task's outputs as `predict.Predictor.predict` gives them ([n, C] or [n])."""
    return np.stack(self.predict_items([(task, e) for e in examples]))

  def predict_files(self, inputs: dict[str, str | os.PathLike],
                    outputs: dict[str, str | os.PathLike | None] | None = None, *,
                    label_column: str | None = 'label', require_labels: bool = False,
                    input_format: str = '', output_format: str = ''
                    ) -> dict[str, predict.PredictionResult]:
    """`predict.Predictor.predict_file` for one file per task, all predicted together.

    Args:
      inputs: {task name: file}, read as that task's predictor reads it (`predict.read_file`
        with the text columns and headerless layout its training files had).
      outputs: {task name: where to write its predictions}; None or missing: not written.
    """
    read = {}
    for name, path in inputs.items():  # every file is read before the model is loaded
      if name not in self._predictors:
        raise ServingError(f'unknown task {name!r}; serving: {", ".join(self._predictors)}')
      p = self._predictors[name]
      read[name] = predict.read_file(
          path, p.task, label_column=label_column, require_labels=require_labels,
          fmt=input_format,
          column_names=(p.info.get('file_layout') or {}).get('column_names'))
    items = [(name, e) for name, (examples, _) in read.items() for e in examples]
    flat = self.predict_items(items)
    results, start = {}, 0
    for name, (examples, has_labels) in read.items():
      out = np.stack(flat[start:start + len(examples)])
      start += len(examples)
      p = self._predictors[name]
      where = (outputs or {}).get(name)
      written = (None if where is None else
                 predict.write_predictions(where, out, p.task.labels, fmt=output_format))
      results[name] = predict.PredictionResult(
          predictions=predict.label_names(out, p.task.labels), outputs=out,
          metrics=p.evaluate(out, examples) if has_labels else None, output_path=written)
    return results

  def warm_up(self) -> int:
    """Compiles the forward pass for every length bucket; returns how many shapes."""
    loaded = self._loaded
    lengths = sorted({pipeline.bucket_length(n, loaded['max_length'], self.bucket_size)
                      for n in range(1, loaded['max_length'] + 1)})
    for length in lengths:
      batch = {'input_ids': np.zeros((self.batch_size, length), np.int32),
               'attention_mask': np.ones((self.batch_size, length), np.int32),
               'token_type_ids': np.zeros((self.batch_size, length), np.int32),
               'mask_positions': np.zeros((self.batch_size,), np.int32),
               'task': np.zeros((self.batch_size,), np.int32)}
      jax.block_until_ready(loaded['forward'](loaded['arrays'],
                                              pipeline.shard_batch(batch, self.mesh)))
    return len(lengths)

  def compiled_shapes(self) -> int:
    """How many input shapes the forward pass has been compiled for."""
    return self._loaded['forward']._cache_size()  # pylint: disable=protected-access

  def memory_bytes(self) -> dict[str, int]:
    """Bytes held on the device: the shared frozen tensors, the stacked task tensors."""
    arrays = self._loaded['arrays']
    count = lambda tree: sum(x.nbytes for x in jax.tree_util.tree_leaves(tree))
    return {'frozen': count(arrays['frozen']), 'stacked': count(arrays['stacked'])}


def _forward(arrays: dict[str, Any], batch: dict[str, jax.Array], *, encoder_model: Model,
             lora: AdaptationConfig | None, variants: tuple[tuple[str, str], ...],
             num_classes: int) -> jax.Array:
  """Per example: probabilities [Cmax] of its task (zeros past its labels), or its
  regression score in column 0."""
  config = encoder_model.config

  def one(task, input_ids, attention_mask, token_type_ids, mask_position):
    own = {k: v[task] for k, v in arrays['stacked'].items()}  # the gather
    params = traverse_util.unflatten_dict(
        {tuple(k.split('/')): v for k, v in {**arrays['frozen'], **own}.items()})
    inputs = (input_ids[None], attention_mask[None], token_type_ids[None])
    if lora is None:
      h, pooled = encoder_model.apply({'params': {'backbone': params['backbone']}}, *inputs)
    else:
      with nn.intercept_methods(_lora_interceptor(lora)):
        h, pooled = encoder_model.apply({'params': {'backbone': params['backbone']}}, *inputs)
    logits = []
    for head, pooling in variants:
      if head == 'classifier':
        logits.append(ClassificationHead(config, num_classes, pooling, parent=None).apply(
            {'params': params['classifier']}, h, pooled, inputs[1], True)[0])
      else:  # prompt: the MLM head's logits of the task's label words at its [MASK]
        embeddings = params['backbone']['embeddings']['word_embeddings']['embedding']
        logits.append(MLMHead(config, parent=None).apply(
            {'params': params['mlm_head']}, h[:, mask_position], embeddings,
            vocab_ids=arrays['label_words'][task])[0])
    logits = jnp.stack(logits)[arrays['variant'][task]].astype(jnp.float32)
    valid = jnp.arange(num_classes) < arrays['num_labels'][task]
    probs = jax.nn.softmax(jnp.where(valid, logits, -jnp.inf))
    return jnp.where(arrays['regression'][task], jnp.where(jnp.arange(num_classes) == 0,
                                                           logits, 0.0), probs)

  return jax.vmap(one)(batch['task'], batch['input_ids'], batch['attention_mask'],
                       batch['token_type_ids'], batch['mask_positions'])


@dataclasses.dataclass
class _Request:
  items: list[tuple[str, Example]]
  future: concurrent.futures.Future


class RequestBatcher:
  """Groups concurrent requests into forward passes of the predictor's batch size.

  A worker thread takes the first waiting request, then more until the batch is full or
  `max_wait_s` has passed since the first arrived, predicts them together and completes
  each request's future with its own outputs. A request that fails (an unknown task) fails
  alone: the others of its batch are predicted again without it.
  """

  def __init__(self, predictor: MultiTaskPredictor, *, max_wait_s: float = 0.005):
    self.predictor, self.max_wait_s = predictor, max_wait_s
    self._queue: queue.Queue[_Request | None] = queue.Queue()
    self._thread = threading.Thread(target=self._run, name='request-batcher', daemon=True)
    self._thread.start()

  def submit(self, items: Sequence[tuple[str, Example]]) -> concurrent.futures.Future:
    """A future of `predictor.predict_items(items)`."""
    request = _Request(list(items), concurrent.futures.Future())
    self._queue.put(request)
    return request.future

  def close(self) -> None:
    self._queue.put(None)
    self._thread.join()

  def _run(self) -> None:
    size = self.predictor.batch_size
    while True:
      first = self._queue.get()
      if first is None:
        return
      group, rows, deadline = [first], len(first.items), time.monotonic() + self.max_wait_s
      while rows < size:
        try:
          request = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
        except queue.Empty:
          break
        if request is None:
          self._queue.put(None)
          break
        group.append(request)
        rows += len(request.items)
      self._predict(group)

  def _predict(self, group: list[_Request]) -> None:
    try:
      outputs = self.predictor.predict_items([item for r in group for item in r.items])
    except Exception as e:  # pylint: disable=broad-except
      if len(group) == 1:
        group[0].future.set_exception(e)
      else:
        for request in group:
          self._predict([request])
      return
    start = 0
    for request in group:
      request.future.set_result(outputs[start:start + len(request.items)])
      start += len(request.items)
