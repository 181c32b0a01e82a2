"""A trained model as transformers files: a plain checkpoint, or bottleneck adapters.

`export_hf` writes a `BertForSequenceClassification` / `RobertaForSequenceClassification`
directory (config.json with `id2label`, model.safetensors, the base's tokenizer files):
the base checkpoint with any LoRA delta folded into its kernels and every trained tensor
(head, biases, LayerNorms, everything for `full`) in place. It loads with
`AutoModelForSequenceClassification.from_pretrained` and serves at the base model's cost.

Bottleneck adapters cannot fold into kernels. `export_adapters` writes them in the
transformers naming of the task model, for `torch_adapters.attach_adapters`:

  adapters.safetensors (float32, PyTorch `Linear` layout `[out, in]`):
    <bert|roberta>.encoder.layer.{i}.output.adapter.down.weight            [r, d]
    <bert|roberta>.encoder.layer.{i}.output.adapter.down.bias              [r]
    <bert|roberta>.encoder.layer.{i}.output.adapter.up.weight              [d, r]
    <bert|roberta>.encoder.layer.{i}.output.adapter.up.bias                [d]
    <bert|roberta>.encoder.layer.{i}.attention.output.adapter.*            (placement houlsby)
    classifier.*                                      the trained head, transformers names
    any other trained tensor (e.g. LayerNorms), under its transformers name
  adapter_config.json:
    {"format": "adamix-jax-bottleneck-adapters", "format_version": 1,
     "base_model_name_or_path", "model_type", "hidden_size", "adapter_size",
     "adapter_activation", "placement", "sites": ["ffn"] or ["attention", "ffn"],
     "id2label", "label2id", "problem_type"}

Each adapter computes `h + up(act(down(h)))` on the output of the sublayer's `dense`
projection (`encoder.layer.{i}.output.dense`: site 'ffn'; `...attention.output.dense`:
site 'attention'), before its dropout, residual and LayerNorm.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from flax import traverse_util
from safetensors.numpy import save_file

from adamix_jax import hf_checkpoint, merging
from adamix_jax.adapters import ADAPTER_MODULE, adaptation_param_kind
from adamix_jax.interop import InteropError
from adamix_jax.model import Model

WEIGHTS = 'model.safetensors'
ADAPTERS = 'adapters.safetensors'
ADAPTERS_CONFIG = 'adapter_config.json'
ADAPTERS_FORMAT = 'adamix-jax-bottleneck-adapters'
ADAPTERS_FORMAT_VERSION = 1
TOKENIZER_FILES = ('tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json',
                   'vocab.txt', 'vocab.json', 'merges.txt', 'added_tokens.json')
ARCHITECTURES = {'bert': 'BertForSequenceClassification',
                 'roberta': 'RobertaForSequenceClassification'}
# Our adapter parameter -> (its torch Linear, its parameter, transpose?).
_ADAPTER_PARAMS = {'down_kernel': ('down', 'weight', True), 'down_bias': ('down', 'bias', False),
                   'up_kernel': ('up', 'weight', True), 'up_bias': ('up', 'bias', False)}


def check_classifier(model: Model, what: str) -> None:
  """Exports to the PyTorch ecosystem are sequence classifiers (BERT/RoBERTa)."""
  if model.head != 'classifier':
    raise InteropError(
        f'{what} supports classifier-head models ({", ".join(ARCHITECTURES.values())}); '
        f'this model has the {model.head!r} head. Use the adamix-jax export for it.')
  if model.pooling != 'cls':
    raise InteropError(
        f'{what} needs the transformers classification head (pooling="cls"); this model '
        f'pools with {model.pooling!r}, which *ForSequenceClassification cannot express. '
        'Use the adamix-jax export (experiments.predict) for it.')


def label_maps(labels: Sequence[str] | None, num_labels: int) -> dict[str, Any]:
  """`id2label`, `label2id` and `problem_type` for a transformers config."""
  names = list(labels) if labels is not None else [f'LABEL_{i}' for i in range(num_labels)]
  if len(names) != num_labels:
    raise InteropError(f'{len(names)} label names {names} for a head with {num_labels} '
                       'outputs')
  return {'id2label': {str(i): n for i, n in enumerate(names)},
          'label2id': {n: i for i, n in enumerate(names)},
          'problem_type': ('regression' if num_labels == 1 and labels is None else
                           'single_label_classification')}


def base_model_name(base_checkpoint: str | os.PathLike) -> str:
  """A local base as an absolute path (so the export works from any directory), a hub
  name as is."""
  path = Path(base_checkpoint).expanduser()
  return str(path.resolve()) if path.is_dir() else str(base_checkpoint)


def _copy_tokenizer(base_dir: Path, out: Path) -> list[str]:
  copied = []
  for name in TOKENIZER_FILES:
    if (base_dir / name).is_file():
      shutil.copy(base_dir / name, out / name)
      copied.append(name)
  return copied


def export_hf(model: Model, params: Any, out_dir: str | os.PathLike, *,
              base_checkpoint: str | os.PathLike, labels: Sequence[str] | None = None,
              lora_merge: str = 'mean_factors') -> Path:
  """Writes a transformers `*ForSequenceClassification` directory.

  Args:
    model: the trained `Model` (classifier head; adaptation none, lora or adamix_lora).
    params: its full parameter tree (base weights included). A mixture is merged with
      `lora_merge` first; LoRA is folded into the kernels.
    out_dir: the directory to write.
    base_checkpoint: the base checkpoint the model was built from (its config.json and
      tokenizer files are reused).
    labels: class names (None: LABEL_i; a 1-output head without labels is regression).

  Returns:
    `out_dir`.

  Raises:
    InteropError: bottleneck adapters (use `export_adapters`), another head, or a
      parameter with no transformers name.
  """
  check_classifier(model, 'The transformers (hf) export')
  adaptation = model.adaptation
  if adaptation.uses_bottleneck:
    raise InteropError(
        f"Bottleneck adapters (kind {adaptation.kind!r}) cannot be folded into the "
        "kernels; export them with format 'adapters' and attach them with "
        'adamix_jax.interop.torch_adapters.')
  params, _ = merging.merge_experts(params, adaptation, lora_merge=lora_merge,
                                    fold_lora=adaptation.uses_lora)
  config = model.config
  unmapped = [('/'.join(p)) for p in traverse_util.flatten_dict(params)
              if hf_checkpoint.hf_key(p, config) is None]
  if unmapped:
    raise InteropError(f'No transformers name for {unmapped}: cannot export them')
  base_dir = hf_checkpoint.resolve_model_dir(base_checkpoint)
  hf_config = json.loads((base_dir / 'config.json').read_text())
  hf_config.pop('torch_dtype', None)
  hf_config.update(label_maps(labels, model.num_labels),
                   architectures=[ARCHITECTURES[config.model_type]], dtype='float32')
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  save_file(hf_checkpoint.params_to_hf(params, config, prefix=True), str(out / WEIGHTS),
            metadata={'format': 'pt'})
  (out / 'config.json').write_text(json.dumps(hf_config, indent=2))
  _copy_tokenizer(base_dir, out)
  return out


def adapter_tensors(params: Any, model: Model,
                    trained: Iterable[str] | None = None) -> dict[str, np.ndarray]:
  """The `adapters.safetensors` tensors of a (merged) bottleneck adapter model.

  Args:
    params: the model's parameters.
    model: the model (kind 'adapter'; merge an 'adamix' mixture first).
    trained: '/'-joined paths of the other trained tensors to include (default: the head).
  """
  config = model.config
  flat = traverse_util.flatten_dict(params)
  trained = set(trained) if trained is not None else {
      '/'.join(p) for p in flat if p[0] == 'classifier'}
  out = {}
  for path, value in flat.items():
    value = np.asarray(value, np.float32)
    if adaptation_param_kind(path) == 'adapter':
      i = path.index(ADAPTER_MODULE)
      dense_key, _ = hf_checkpoint.hf_key(path[:i] + ('dense', 'kernel'), config)
      module = dense_key[:-len('dense.weight')] + ADAPTER_MODULE
      linear, name, transpose = _ADAPTER_PARAMS[path[-1]]
      out[f'{module}.{linear}.{name}'] = np.ascontiguousarray(value.T if transpose else value)
    elif '/'.join(path) in trained:
      mapped = hf_checkpoint.hf_key(path, config)
      if mapped is None:
        raise InteropError(f'No transformers name for the trained tensor {"/".join(path)}')
      key, kind = mapped
      out[key] = np.ascontiguousarray(value.T if kind == 'linear' else value)
  return out


def export_adapters(model: Model, params: Any, out_dir: str | os.PathLike, *,
                    base_checkpoint: str | os.PathLike, labels: Sequence[str] | None = None,
                    trained: Iterable[str] | None = None) -> Path:
  """Writes bottleneck adapters (+ the head) for `torch_adapters.attach_adapters`.

  Args:
    model: the trained `Model` ('adapter', or 'adamix', merged here by the expert mean).
    params: its parameters.
    out_dir: the directory to write.
    base_checkpoint: the base checkpoint (recorded in adapter_config.json).
    labels: class names (None: LABEL_i).
    trained: '/'-joined paths of the other trained tensors (default: the head).

  Returns:
    `out_dir`.
  """
  check_classifier(model, 'The adapters export')
  adaptation = model.adaptation
  if not adaptation.uses_bottleneck:
    raise InteropError(
        f"The adapters export holds bottleneck adapters; kind {adaptation.kind!r} has none. "
        "Export LoRA with format 'peft' or 'hf', other methods with 'hf'.")
  params, adaptation = merging.merge_experts(params, adaptation)
  tensors = adapter_tensors(params, model.clone(adaptation=adaptation), trained)
  config = model.config
  info = {
      'format': ADAPTERS_FORMAT,
      'format_version': ADAPTERS_FORMAT_VERSION,
      'base_model_name_or_path': base_model_name(base_checkpoint),
      'model_type': config.model_type,
      'hidden_size': config.hidden_size,
      'adapter_size': adaptation.adapter_size,
      'adapter_activation': adaptation.adapter_activation,
      'placement': adaptation.placement,
      'sites': list(adaptation.adapter_sites),
      **label_maps(labels, model.num_labels),
  }
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  save_file(tensors, str(out / ADAPTERS), metadata={'format': 'pt'})
  (out / ADAPTERS_CONFIG).write_text(json.dumps(info, indent=2))
  return out
