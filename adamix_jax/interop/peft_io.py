"""PEFT LoRA adapters out of and into our models.

Out (`export_peft`): a `lora` model, or an `adamix_lora` mixture merged by
`merging.merge_experts` ('mean_factors': rank r; 'mean_delta': rank E*r with alpha E*alpha,
so alpha/r is kept), written as PEFT writes the LoRA adapter of a
`*ForSequenceClassification` model:

  adapter_config.json: peft_type LORA, task_type SEQ_CLS, base_model_name_or_path, r,
    lora_alpha, lora_dropout, target_modules, modules_to_save ['classifier'] (and
    'LayerNorm' when those were trained).
  adapter_model.safetensors:
    base_model.model.<bert|roberta>.encoder.layer.N.<projection>.lora_A.weight  [r, d_in]
    base_model.model.<bert|roberta>.encoder.layer.N.<projection>.lora_B.weight  [d_out, r]
    base_model.model.classifier.*  (the head under its transformers names)

Our `lora_a` [d_in, r] and `lora_b` [r, d_out] are their transposes; both compute
`x A B * alpha / r`. `target_modules` is a regex (PEFT full-matches it against module
names) naming exactly our targets: the bare name 'dense' would also hit the pooler and
RoBERTa's head, and 'output.dense' the attention output.

In (`read_peft`, `overlay_peft`, `load_peft`): a PEFT LoRA adapter of a BERT/RoBERTa base
becomes `lora_a`/`lora_b` (copied into every expert of an `adamix_lora` model) and the
head; any other tensor it saved (modules_to_save) replaces the base tensor of that name.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable

import jax
import numpy as np
from flax import traverse_util
from safetensors.numpy import load_file, save_file

from adamix_jax import hf_checkpoint, merging, methods
from adamix_jax.adapters import (LORA_TARGETS, AdaptationConfig, adaptation_param_kind,
                                 is_mixture_leaf)
from adamix_jax.encoder import EncoderConfig
from adamix_jax.interop import InteropError
from adamix_jax.interop.hf_export import base_model_name, check_classifier
from adamix_jax.model import Model, from_pretrained

CONFIG = 'adapter_config.json'
WEIGHTS = 'adapter_model.safetensors'
PREFIX = 'base_model.model.'
TASK_TYPES = ('SEQ_CLS', 'FEATURE_EXTRACTION')
SUPPORTED = ('peft_type LORA (plain LoRA; rsLoRA scaling accepted) with task_type '
             f'{" or ".join(TASK_TYPES)}, bias "none", one r and lora_alpha for every module, '
             'LoRA on every layer')

ParamPath = tuple[str, ...]

# Our LoRA targets -> the projection's module path inside `backbone/layer_{i}`.
_SITE_PATHS: dict[str, ParamPath] = {
    'query': ('attention', 'self', 'query'),
    'key': ('attention', 'self', 'key'),
    'value': ('attention', 'self', 'value'),
    'attention_output': ('attention', 'output', 'dense'),
    'intermediate': ('intermediate_dense',),
    'output': ('output', 'dense'),
}
assert set(_SITE_PATHS) == set(LORA_TARGETS)
_SITE_OF_PATH = {v: k for k, v in _SITE_PATHS.items()}
_LORA_KEY = re.compile(r'(.+)\.lora_([AB])\.weight')


def _module_name(module_path: ParamPath, config: EncoderConfig, *, prefix: bool = True) -> str:
  """The transformers module name of one of our Dense modules, e.g.
  ('backbone', 'layer_0', 'intermediate_dense') -> 'bert.encoder.layer.0.intermediate.dense'."""
  mapped = hf_checkpoint.hf_key(module_path + ('kernel',), config, prefix=prefix)
  if mapped is None:
    raise InteropError(f'{"/".join(module_path)} has no transformers module name')
  return mapped[0][:-len('.weight')]


def target_modules(targets: Iterable[str], config: EncoderConfig) -> str:
  """A PEFT `target_modules` regex matching exactly the projections of `targets` in every
  layer, in a task model (`bert.encoder...`) or a bare encoder (`encoder...`)."""
  layer = 'encoder.layer.0.'
  names = []
  for site in LORA_TARGETS:
    if site in targets:
      module = _module_name(('backbone', 'layer_0') + _SITE_PATHS[site], config,
                            prefix=False)
      assert module.startswith(layer), module
      names.append(re.escape(module[len(layer):]))
  return r'(?:.*\.)?encoder\.layer\.\d+\.(?:' + '|'.join(names) + ')'


def _number(x: float) -> int | float:
  return int(x) if float(x).is_integer() else float(x)


# --------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------


def to_peft(model: Model, params: Any, *, base_checkpoint: str | os.PathLike,
            trained: Iterable[str] | None = None,
            lora_merge: str = 'mean_factors') -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """PEFT's tensors and adapter config for a LoRA model.

  Args:
    model: a classifier `Model` of kind 'lora' or 'adamix_lora'.
    params: its parameters (a mixture is merged with `lora_merge`).
    base_checkpoint: recorded as `base_model_name_or_path`.
    trained: '/'-joined paths of every trained tensor (an export's `shapes`); besides the
      LoRA factors only the head and LayerNorms can go into a PEFT LoRA adapter. Default:
      the LoRA factors and the head.
    lora_merge: see `merging.merge_experts`.

  Returns:
    (adapter_model.safetensors tensors, adapter_config.json dict).
  """
  check_classifier(model, 'The PEFT export')
  adaptation = model.adaptation
  if not adaptation.uses_lora:
    hint = ("format 'adapters'" if adaptation.uses_bottleneck else "format 'hf'")
    raise InteropError(f'A PEFT LoRA adapter needs a lora or adamix_lora model, got kind '
                       f'{adaptation.kind!r}; export it with {hint}.')
  params, adaptation = merging.merge_experts(params, adaptation, lora_merge=lora_merge)
  config = model.config
  flat = traverse_util.flatten_dict(jax.device_get(params))
  trained = ({'/'.join(p) for p in flat if p[0] == 'classifier'} if trained is None
             else set(trained))
  extra = []
  for name in sorted(trained):
    path = tuple(name.split('/'))
    if adaptation_param_kind(path) == 'lora' or methods.is_head(path):
      continue
    if not (path[0] == 'backbone' and methods.is_layer_norm(path)):
      raise InteropError(
          f'{name} was trained, and a PEFT LoRA adapter cannot hold it (it holds LoRA '
          "factors, the head and LayerNorms); export with format 'hf' instead.")
    extra.append(path)
  modules_to_save = ['classifier'] + (['LayerNorm'] if extra else [])
  tensors = {}
  for path, value in flat.items():
    value = np.asarray(value, np.float32)
    if path[-1] in ('lora_a', 'lora_b'):
      module = _module_name(path[:-1], config)
      tensors[f'{PREFIX}{module}.lora_{path[-1][-1].upper()}.weight'] = (
          np.ascontiguousarray(value.T))
    elif methods.is_head(path) or (extra and path[0] == 'backbone' and
                                   methods.is_layer_norm(path)):
      # PEFT saves every module whose name ends in a modules_to_save entry, in full.
      key, kind = hf_checkpoint.hf_key(path, config)
      tensors[PREFIX + key] = np.ascontiguousarray(value.T if kind == 'linear' else value)
  adapter_config = {
      'peft_type': 'LORA',
      'task_type': 'SEQ_CLS',
      'base_model_name_or_path': base_model_name(base_checkpoint),
      'r': adaptation.lora_rank,
      'lora_alpha': _number(adaptation.lora_alpha),
      'lora_dropout': adaptation.lora_dropout,
      'target_modules': target_modules(adaptation.lora_targets, config),
      'modules_to_save': modules_to_save,
      'bias': 'none',
      'fan_in_fan_out': False,
      'use_rslora': False,
      'use_dora': False,
      'init_lora_weights': True,
      'inference_mode': True,
  }
  return tensors, adapter_config


def export_peft(model: Model, params: Any, out_dir: str | os.PathLike, *,
                base_checkpoint: str | os.PathLike, labels: Any = None,
                trained: Iterable[str] | None = None,
                lora_merge: str = 'mean_factors') -> Path:
  """Writes a PEFT LoRA adapter directory (`to_peft`); returns it.

  `peft.PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base,
  num_labels=...), out_dir)` loads it. `labels` is accepted for symmetry with the other
  exports; PEFT's files have no place for label names.
  """
  del labels
  tensors, adapter_config = to_peft(model, params, base_checkpoint=base_checkpoint,
                                    trained=trained, lora_merge=lora_merge)
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  save_file(tensors, str(out / WEIGHTS), metadata={'format': 'pt'})
  (out / CONFIG).write_text(json.dumps(adapter_config, indent=2))
  return out


# --------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PeftAdapter:
  """A PEFT adapter directory as read: its config and its tensors (float32 numpy)."""

  source: str
  config: dict[str, Any]
  tensors: dict[str, np.ndarray]

  @property
  def rank(self) -> int:
    return int(self.config['r'])

  @property
  def alpha(self) -> float:
    """Our lora_alpha: the update is scaled by alpha / r (rsLoRA's alpha / sqrt(r))."""
    alpha = float(self.config.get('lora_alpha', 8))
    return alpha * math.sqrt(self.rank) if self.config.get('use_rslora') else alpha


def _check_supported(config: dict[str, Any], source: str) -> None:
  peft_type = config.get('peft_type')
  if peft_type != 'LORA':
    raise InteropError(f'{source}: PEFT config type {peft_type!r} is not supported; '
                       f'supported: {SUPPORTED}')
  unsupported = []
  if config.get('use_dora'):
    unsupported.append('use_dora (DoRA)')
  if config.get('bias', 'none') != 'none':
    unsupported.append(f'bias={config["bias"]!r}')
  for flag in ('lora_bias', 'fan_in_fan_out', 'rank_pattern', 'alpha_pattern',
               'layers_to_transform', 'layer_replication', 'target_parameters',
               'trainable_token_indices'):
    if config.get(flag):
      unsupported.append(f'{flag}={config[flag]!r}')
  if config.get('task_type') not in TASK_TYPES + (None,):
    unsupported.append(f'task_type={config["task_type"]!r}')
  if unsupported:
    raise InteropError(f'{source}: LoRA options not supported: {", ".join(unsupported)}; '
                       f'supported: {SUPPORTED}')


def read_peft(adapter_dir: str | os.PathLike) -> PeftAdapter:
  """Reads and checks a PEFT adapter directory (adapter_config.json + safetensors).

  Raises:
    InteropError: missing files, or a PEFT config type / option we do not support.
  """
  path = Path(adapter_dir)
  config_path, weights = path / CONFIG, path / WEIGHTS
  if not config_path.is_file():
    raise InteropError(f'{config_path} not found: not a PEFT adapter directory')
  config = json.loads(config_path.read_text())
  _check_supported(config, str(path))
  if not weights.is_file():
    other = ' (only adapter_model.bin, a pickle: convert it to safetensors)' if (
        path / 'adapter_model.bin').is_file() else ''
    raise InteropError(f'{weights} not found{other}')
  tensors = {k: np.asarray(v, np.float32) for k, v in load_file(str(weights)).items()}
  return PeftAdapter(source=str(path), config=config, tensors=tensors)


@dataclasses.dataclass(frozen=True)
class _Entry:
  key: str  # the PEFT key
  stored: np.ndarray  # as stored (PyTorch layout)
  transpose: bool

  @property
  def value(self) -> np.ndarray:
    return self.stored.T if self.transpose else self.stored


def _entries(adapter: PeftAdapter, config: EncoderConfig
             ) -> tuple[dict[ParamPath, _Entry], AdaptationConfig]:
  """Our parameter path for every tensor of the adapter, and the plain LoRA config."""
  r = adapter.rank
  entries: dict[ParamPath, _Entry] = {}
  layers: dict[str, set[int]] = {}
  known = ', '.join(f'{t}: {_module_name(("backbone", "layer_0") + p, config, prefix=False)}'
                    for t, p in _SITE_PATHS.items())
  for key, value in adapter.tensors.items():
    name = key[len(PREFIX):] if key.startswith(PREFIX) else key
    m = _LORA_KEY.fullmatch(name)
    if m:
      module, side = m.groups()
      mapped = hf_checkpoint.param_path(module + '.weight', config)
      path = mapped[0][:-1] if mapped else ()
      site = (_SITE_OF_PATH.get(path[2:]) if path[:1] == ('backbone',) and
              path[1].startswith('layer_') else None)
      if site is None:
        raise InteropError(f'{adapter.source}: {key}: LoRA on {module!r}, which our '
                           f'{config.model_type} model cannot hold; LoRA targets are '
                           f'({known})')
      rank_axis = 0 if side == 'A' else 1
      if value.ndim != 2 or value.shape[rank_axis] != r:
        expected = list(value.shape)
        expected[rank_axis] = r
        raise InteropError(f'{adapter.source}: {key} has shape {tuple(value.shape)}; with '
                           f'r={r} (adapter_config.json) it must be {tuple(expected)}')
      layers.setdefault(site, set()).add(int(path[1][len('layer_'):]))
      entries[path + (f'lora_{side.lower()}',)] = _Entry(key, value, True)
    elif '.lora_' in name:
      raise InteropError(f'{adapter.source}: {key}: a LoRA tensor kind we cannot map '
                         '(only lora_A / lora_B of Linear layers)')
    else:
      mapped = hf_checkpoint.param_path(name, config)
      if mapped is None:
        raise InteropError(f'{adapter.source}: {key} matches no {config.model_type} '
                           'parameter')
      entries[mapped[0]] = _Entry(key, value, mapped[1] == 'linear')
  if not layers:
    raise InteropError(f'{adapter.source}: no LoRA weights (lora_A / lora_B) found')
  for path in [p for p in entries if p[-1] == 'lora_a']:
    if path[:-1] + ('lora_b',) not in entries:
      raise InteropError(f'{adapter.source}: {entries[path].key} has no lora_B')
  for site, found in layers.items():
    if found != set(range(config.num_hidden_layers)):
      raise InteropError(
          f'{adapter.source}: LoRA on {site!r} in layers {sorted(found)} of '
          f'{config.num_hidden_layers}; our LoRA covers every layer of a target')
  adaptation = AdaptationConfig(
      kind='lora', lora_rank=r, lora_alpha=adapter.alpha,
      lora_dropout=float(adapter.config.get('lora_dropout', 0.0)),
      lora_targets=tuple(t for t in LORA_TARGETS if t in layers))
  return entries, adaptation


def adaptation_from_peft(adapter: PeftAdapter, config: EncoderConfig) -> AdaptationConfig:
  """The plain LoRA configuration (rank, alpha, dropout, targets) the adapter describes."""
  return _entries(adapter, config)[1]


def overlay_peft(params: Any, adaptation: AdaptationConfig, config: EncoderConfig,
                 adapter: PeftAdapter) -> Any:
  """`params` with the adapter's tensors in place (in every expert of a mixture).

  Args:
    params: parameters of a model built with `adaptation` (e.g. from `from_pretrained`).
    adaptation: 'lora' or 'adamix_lora', with the adapter's rank, alpha / r and targets.
    config: the encoder config.
    adapter: from `read_peft`.

  Raises:
    InteropError: rank, scale, targets or a tensor shape that do not fit (names the key
      and both shapes).
  """
  entries, peft_adaptation = _entries(adapter, config)
  if not adaptation.uses_lora:
    raise InteropError(f'{adapter.source}: a LoRA adapter loads into a lora or adamix_lora '
                       f'model, not kind {adaptation.kind!r}')
  mismatches = []
  if adaptation.lora_rank != peft_adaptation.lora_rank:
    mismatches.append(f'model lora_rank {adaptation.lora_rank} vs adapter r '
                      f'{peft_adaptation.lora_rank}')
  elif not math.isclose(adaptation.lora_alpha, peft_adaptation.lora_alpha):
    mismatches.append(f'model lora_alpha {adaptation.lora_alpha} vs adapter '
                      f'{peft_adaptation.lora_alpha}')
  if set(adaptation.lora_targets) != set(peft_adaptation.lora_targets):
    mismatches.append(f'model lora_targets {tuple(adaptation.lora_targets)} vs adapter '
                      f'{peft_adaptation.lora_targets}')
  if mismatches:
    raise InteropError(f'{adapter.source} does not fit the model: ' + '; '.join(mismatches))
  flat = traverse_util.flatten_dict(params)
  for path, entry in entries.items():
    name = '/'.join(path)
    if path not in flat:
      raise InteropError(f'{adapter.source}: {entry.key} ({name}) has no place in the model')
    leaf = flat[path]
    stacked = is_mixture_leaf(path, adaptation)
    expected = tuple(leaf.shape[1:] if stacked else leaf.shape)
    if entry.value.shape != expected:
      stored = expected[::-1] if entry.transpose else expected
      raise InteropError(f'{adapter.source}: {entry.key} has shape {entry.stored.shape}, '
                         f'the model expects {stored} ({name} is {expected})')
    value = np.broadcast_to(entry.value, leaf.shape) if stacked else entry.value
    flat[path] = np.ascontiguousarray(value, dtype=np.asarray(leaf).dtype)
  return traverse_util.unflatten_dict(flat)


def load_peft(adapter_dir: str | os.PathLike, *, base_checkpoint: str | None = None,
              adaptation: AdaptationConfig | None = None, num_labels: int | None = None,
              dtype=np.float32, rng: jax.Array | None = None
              ) -> tuple[Model, Any, PeftAdapter]:
  """Our model with a PEFT LoRA adapter loaded: to evaluate, or to train further.

  Args:
    adapter_dir: a PEFT LoRA adapter directory.
    base_checkpoint: the base model; default: the adapter's base_model_name_or_path.
    adaptation: default: the plain LoRA the adapter describes. An 'adamix_lora' config
      with the same rank, alpha / r and targets starts every expert as the adapter.
    num_labels: the head's outputs; default: the adapter's head, else 2 (a fresh head).

  Returns:
    (model, params, the adapter as read).
  """
  adapter = read_peft(adapter_dir)
  base = base_checkpoint or adapter.config.get('base_model_name_or_path')
  if not base:
    raise InteropError(f'{adapter.source}: adapter_config.json names no '
                       'base_model_name_or_path; pass the base checkpoint')
  try:
    config = hf_checkpoint.load_config(hf_checkpoint.resolve_model_dir(base))
  except hf_checkpoint.CheckpointError as e:
    raise InteropError(f'{adapter.source}: its base model {base!r} cannot be mapped: '
                       f'{e}') from e
  entries, peft_adaptation = _entries(adapter, config)
  head = entries.get(('classifier', 'out_proj', 'kernel'))
  if num_labels is None:
    num_labels = head.value.shape[-1] if head is not None else 2
  model, params, _ = from_pretrained(base, adaptation=adaptation or peft_adaptation,
                                     num_labels=num_labels, dtype=dtype, rng=rng)
  return model, overlay_peft(params, model.adaptation, config, adapter), adapter


def import_to_export(adapter_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                     task: Any, base_checkpoint: str | None = None,
                     max_length: int = 128) -> Path:
  """Writes a PEFT LoRA adapter as an adamix-jax export (`export.load_export`, `predict`).

  Args:
    adapter_dir: the PEFT adapter.
    out_dir: the export directory to write.
    task: the `TaskSpec` the adapter's head predicts (labels, text columns, metrics).
    base_checkpoint: default: the adapter's base_model_name_or_path.
    max_length: tokenizer truncation length recorded for prediction.
  """
  from adamix_jax import export  # pylint: disable=import-outside-toplevel
  model, params, adapter = load_peft(adapter_dir, base_checkpoint=base_checkpoint,
                                     num_labels=task.num_labels)
  base = base_checkpoint or adapter.config['base_model_name_or_path']
  entries, _ = _entries(adapter, model.config)
  if ('classifier', 'out_proj', 'kernel') not in entries:
    raise InteropError(
        f'{adapter.source}: the adapter holds no classification head (task_type '
        f'{adapter.config.get("task_type")!r}); an export would predict with a random one. '
        'Import an adapter saved with its head (task_type SEQ_CLS), or train from this one '
        '(config.model.peft_adapter) and export the run.')
  flat = traverse_util.flatten_dict(params)
  tensors = {'/'.join(p): np.ascontiguousarray(v, np.float32) for p, v in flat.items()
             if p in entries or methods.is_head(p)}
  return export.write_export(out_dir, tensors, base_checkpoint=str(base), method='lora',
                             merged_method='lora', adaptation=model.adaptation, task=task,
                             max_length=max_length)
