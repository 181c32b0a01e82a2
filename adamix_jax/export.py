"""Export a trained run as the few MB a user needs to serve it, and load it back.

An export directory holds:
- `adapter.safetensors`: the trained tensors after merging (the merged adapters or LoRA
  factors, the task head; for bitfit the biases, for full fine-tuning every tensor), keyed
  by their '/'-joined parameter path;
- `export.json`: what rebuilds the model around them: the base checkpoint, the method and
  its (merged) adaptation config, the task and label names, how the training files were
  written (the column names of headerless files), tensor shapes, and the metrics measured
  at export time.
`load_export` reloads the base checkpoint, overlays the tensors and returns a model that
predicts exactly as the trained one did.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import ml_collections
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import traverse_util
import safetensors.numpy

from adamix_jax import merging, methods, registry
from adamix_jax.adapters import AdaptationConfig
from adamix_jax.data import sources
from adamix_jax.data.tasks import TaskSpec
from adamix_jax.model import Model, from_pretrained

TENSORS = 'adapter.safetensors'
INFO = 'export.json'
FORMAT_VERSION = 1

# After merging, a mixture method's trainable set is that of its plain counterpart.


def export_run(params: Any, out_dir: str | os.PathLike, *, config: ml_collections.ConfigDict,
               model: Model, task: TaskSpec, adaptation: AdaptationConfig,
               metrics: dict[str, float] | None = None,
               merged_adaptation: AdaptationConfig | None = None) -> epath.Path:
  """Writes a trained run's tensors + export.json.

  Args:
    params: the run's parameters; for a mixture, merged here with the mean unless
      `merged_adaptation` says they were merged already (e.g. Fisher-weighted).
    config: the run's config; model: its `model.Model`; task: its task; adaptation: what
      it trained (the mixture's, before merging).
  """
  if merged_adaptation is not None:
    adaptation = merged_adaptation
  elif adaptation.is_mixture:
    params, adaptation = merging.merge_experts(params, adaptation,
                                               lora_merge=config.lora_merge)
  method = registry.get(config.method).merged
  mask = methods.trainable_mask(params, method, train_layer_norm=config.train_layer_norm)
  flat = traverse_util.flatten_dict(params)
  flat_mask = traverse_util.flatten_dict(mask)
  tensors = {'/'.join(k): np.asarray(v, np.float32) for k, v in flat.items() if flat_mask[k]}
  return write_export(
      out_dir, tensors, base_checkpoint=str(config.model.checkpoint), method=config.method,
      merged_method=method, adaptation=adaptation, task=task,
      max_length=int(config.data.max_length), dtype=str(config.model.dtype),
      head=model.head, label_word_ids=model.label_word_ids, pooling=model.pooling,
      # The prompt that renders inputs for a prompt-head model (None for a classifier).
      prompt=({'template': config.prompt.template,
               'label_words': dict(config.prompt.label_words)}
              if model.head == 'prompt' else None),
      file_layout=sources.file_layout(config.data), metrics=metrics)


def write_export(out_dir: str | os.PathLike, tensors: dict[str, np.ndarray], *,
                 base_checkpoint: str, method: str, merged_method: str,
                 adaptation: AdaptationConfig, task: TaskSpec, max_length: int,
                 dtype: str = 'float32', head: str = 'classifier',
                 label_word_ids: tuple[int, ...] = (), pooling: str = 'cls',
                 prompt: dict[str, Any] | None = None,
                 file_layout: Mapping[str, Any] | None = None,
                 metrics: dict[str, float] | None = None) -> epath.Path:
  """Writes an export directory: `tensors` ('/'-joined paths) and the export.json that
  rebuilds the model around them (`load_export`). `file_layout` says how the training
  files were written (`sources.DataSource.file_layout`: their format, the column names of
  headerless files), so that `predict` reads files like them."""
  info = {
      'format_version': FORMAT_VERSION,
      'base_checkpoint': base_checkpoint,
      'method': method,
      'merged_method': merged_method,
      'adaptation': adaptation.to_json(),
      'task': task.name,
      'labels': list(task.labels) if task.labels is not None else None,
      'num_labels': task.num_labels,
      'text_columns': list(task.text_columns),
      'head': head,
      'pooling': pooling,
      'label_word_ids': list(label_word_ids),
      'prompt': prompt,
      # How the task is scored, so that `predict` can score new labelled data (a custom
      # task is not in the registry).
      'task_metrics': list(task.metrics),
      'selection_metric': task.selection_metric,
      # How the training files were written (None: nothing `predict` needs to know).
      'file_layout': dict(file_layout) if file_layout is not None else None,
      'max_length': int(max_length),
      'dtype': dtype,
      'shapes': {k: list(v.shape) for k, v in tensors.items()},
      'metrics': metrics or {},
  }
  out = epath.Path(out_dir)  # local, or gs:// (a run directory on a TPU pod)
  out.mkdir(parents=True, exist_ok=True)
  # safetensors' numpy writer copies raw memory: a transposed view would be saved scrambled.
  (out / TENSORS).write_bytes(safetensors.numpy.save(
      {k: np.ascontiguousarray(v) for k, v in tensors.items()}))
  (out / INFO).write_text(json.dumps(info, indent=2))
  return out


def read_info(export_dir: str | os.PathLike) -> dict[str, Any]:
  path = epath.Path(export_dir) / INFO
  if not path.is_file():
    raise FileNotFoundError(f'{path} not found: not an adamix-jax export directory')
  info = json.loads(path.read_text())
  if info.get('format_version') != FORMAT_VERSION:
    raise ValueError(f'{path}: format_version {info.get("format_version")!r} is not '
                     f'{FORMAT_VERSION}')
  return info


def load_export(export_dir: str | os.PathLike, *, base_checkpoint: str | None = None,
                dtype=jnp.float32) -> tuple[Model, Any, dict[str, Any]]:
  """Rebuilds (model, params, info) from an export and its base checkpoint.

  Args:
    export_dir: the directory `export_run` wrote.
    base_checkpoint: where the base checkpoint lives now, if not where export.json says.
  """
  info = read_info(export_dir)
  fields = dict(info['adaptation'])
  fields['lora_targets'] = tuple(fields['lora_targets'])
  adaptation = AdaptationConfig(**fields)
  model, params, _ = from_pretrained(base_checkpoint or info['base_checkpoint'],
                                     adaptation=adaptation,
                                     head=info.get('head', 'classifier'),
                                     num_labels=info['num_labels'],
                                     label_word_ids=tuple(info.get('label_word_ids', ())),
                                     pooling=info.get('pooling', 'cls'), dtype=dtype)
  tensors_path = epath.Path(export_dir) / TENSORS
  try:
    tensors = safetensors.numpy.load(tensors_path.read_bytes())
  except Exception as e:  # safetensors raises its own error types, naming no file
    raise ValueError(f'{tensors_path}: not a readable safetensors file ({e}); the file may '
                     'be truncated or of another format') from e
  # Every tensor export.json lists must be there: a missing one would stay at its random
  # initialisation and predict nonsense without a word.
  missing = sorted(set(info.get('shapes', {})) - set(tensors))
  if missing:
    raise ValueError(f'{export_dir}/{TENSORS} lacks tensors that {INFO} lists '
                     f'({len(missing)}): ' + ', '.join(missing[:8]) +
                     (' ...' if len(missing) > 8 else ''))
  flat = traverse_util.flatten_dict(params)
  for key, value in tensors.items():
    path = tuple(key.split('/'))
    if path not in flat:
      raise ValueError(f'{export_dir}/{TENSORS}: tensor {key!r} has no place in the model')
    if tuple(flat[path].shape) != value.shape:
      raise ValueError(f'{export_dir}/{TENSORS}: tensor {key!r} has shape {value.shape}, the '
                       f'model expects {tuple(flat[path].shape)}')
    flat[path] = jnp.asarray(value)
  return model, traverse_util.unflatten_dict(flat), info
