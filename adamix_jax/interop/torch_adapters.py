"""Exported bottleneck adapters on a transformers BERT/RoBERTa, in plain PyTorch.

    model = torch_adapters.from_pretrained('export_adapters/')   # base + adapters + head
    # or, on a model you built yourself:
    torch_adapters.attach_adapters(model, 'export_adapters/')

`hf_export.export_adapters` documents the files. Each adapter becomes a `BottleneckAdapter`
registered as the submodule `adapter` of its sublayer output (`encoder.layer.{i}.output`,
and `encoder.layer.{i}.attention.output` for Houlsby placement), so `.to()`, `.half()`
and `state_dict()` carry it; a forward hook on that sublayer's `dense` projection applies
it to the projection's output, before dropout, residual and LayerNorm, exactly where the
JAX model applies it.

Only this module of adamix_jax needs PyTorch (and transformers for `from_pretrained`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

try:
  import torch
  from torch import nn
except ImportError as e:  # pragma: no cover - exercised only without torch
  raise ImportError('adamix_jax.interop.torch_adapters needs PyTorch: pip install torch '
                    '(nothing else in adamix_jax does).') from e

from safetensors.torch import load_file

ADAPTERS = 'adapters.safetensors'
CONFIG = 'adapter_config.json'
FORMAT = 'adamix-jax-bottleneck-adapters'
ADAPTER = 'adapter'

ACTIVATIONS = {
    'gelu': lambda: nn.GELU(),
    'gelu_new': lambda: nn.GELU(approximate='tanh'),
    'gelu_pytorch_tanh': lambda: nn.GELU(approximate='tanh'),
    'relu': nn.ReLU,
    'silu': nn.SiLU,
    'swish': nn.SiLU,
    'tanh': nn.Tanh,
}


class BottleneckAdapter(nn.Module):
  """`h + up(act(down(h)))`."""

  def __init__(self, hidden_size: int, adapter_size: int, activation: str = 'gelu'):
    super().__init__()
    if activation not in ACTIVATIONS:
      raise ValueError(f'Unknown adapter activation {activation!r}; supported: '
                       f'{sorted(ACTIVATIONS)}')
    self.down = nn.Linear(hidden_size, adapter_size)
    self.act = ACTIVATIONS[activation]()
    self.up = nn.Linear(adapter_size, hidden_size)

  def forward(self, h: torch.Tensor) -> torch.Tensor:
    return h + self.up(self.act(self.down(h)))


def _hook(adapter: BottleneckAdapter):
  def hook(module, args, output):
    del module, args
    return adapter(output)
  return hook


def read_config(adapter_dir: str | os.PathLike) -> dict[str, Any]:
  path = Path(adapter_dir) / CONFIG
  if not path.is_file():
    raise FileNotFoundError(f'{path} not found: not an adamix-jax adapters export')
  config = json.loads(path.read_text())
  if config.get('format') != FORMAT:
    raise ValueError(f'{path}: format {config.get("format")!r} is not {FORMAT!r}')
  return config


def attach_adapters(model: nn.Module, adapter_dir: str | os.PathLike) -> nn.Module:
  """Attaches exported adapters (and loads the exported head etc.) into `model` in place.

  Args:
    model: a transformers `BertModel`/`RobertaModel` or a `*ForSequenceClassification`
      (needed when the export holds a head) of the export's base.
    adapter_dir: a directory written by `hf_export.export_adapters`.

  Returns:
    `model`, with the adapters as submodules and their forward hooks registered.
  """
  config = read_config(adapter_dir)
  if getattr(model.config, 'model_type', None) != config['model_type']:
    raise ValueError(f'{adapter_dir}: adapters for a {config["model_type"]} model, got a '
                     f'{getattr(model.config, "model_type", type(model).__name__)}')
  tensors = load_file(str(Path(adapter_dir) / ADAPTERS))
  prefix = f'{config["model_type"]}.'
  base = model.base_model  # the encoder, in a task model or a bare one
  adapters: dict[str, dict[str, torch.Tensor]] = {}
  others = {}
  for key, value in tensors.items():
    name = key[len(prefix):] if key.startswith(prefix) else key
    module, sep, param = name.partition(f'.{ADAPTER}.')
    if sep:
      adapters.setdefault(module, {})[param] = value
    else:
      others[key] = value
  for module_name, state in sorted(adapters.items()):
    parent = base.get_submodule(module_name)
    dense = parent.dense
    if hasattr(parent, ADAPTER):
      raise ValueError(f'{module_name} already has an adapter attached')
    adapter = BottleneckAdapter(config['hidden_size'], config['adapter_size'],
                                config['adapter_activation'])
    adapter.load_state_dict(state)
    adapter.to(device=dense.weight.device, dtype=dense.weight.dtype)
    parent.add_module(ADAPTER, adapter)
    adapter.hook_handle = dense.register_forward_hook(_hook(adapter))
  if others:
    own = model.state_dict()
    renamed = {}
    for key, value in others.items():
      stripped = key[len(prefix):] if key.startswith(prefix) else key
      target = key if key in own else stripped if stripped in own else None
      if target is None:
        raise ValueError(f'{adapter_dir}: {key} has no place in {type(model).__name__} (a '
                         'classifier head needs a *ForSequenceClassification model)')
      if tuple(own[target].shape) != tuple(value.shape):
        raise ValueError(f'{adapter_dir}: {key} has shape {tuple(value.shape)}, the model '
                         f'expects {tuple(own[target].shape)}')
      renamed[target] = value
    model.load_state_dict(renamed, strict=False)
  return model


def detach_adapters(model: nn.Module) -> nn.Module:
  """Removes every attached adapter and its hook (head and other tensors stay loaded)."""
  for module in list(model.modules()):
    adapter = module._modules.get(ADAPTER)  # pylint: disable=protected-access
    if isinstance(adapter, BottleneckAdapter):
      adapter.hook_handle.remove()
      del module._modules[ADAPTER]  # pylint: disable=protected-access
  return model


def from_pretrained(adapter_dir: str | os.PathLike, base: str | os.PathLike | None = None,
                    **kwargs: Any) -> nn.Module:
  """`AutoModelForSequenceClassification` of the base, with the adapters and head attached,
  in eval mode.

  Args:
    adapter_dir: a directory written by `hf_export.export_adapters`.
    base: the base checkpoint; default: the export's base_model_name_or_path.
    **kwargs: passed to `from_pretrained` (e.g. `dtype`).
  """
  import transformers  # pylint: disable=import-outside-toplevel
  config = read_config(adapter_dir)
  id2label = {int(i): n for i, n in config['id2label'].items()}
  model = transformers.AutoModelForSequenceClassification.from_pretrained(
      str(base or config['base_model_name_or_path']), num_labels=len(id2label),
      id2label=id2label, label2id=config['label2id'], problem_type=config['problem_type'],
      **kwargs)
  return attach_adapters(model, adapter_dir).eval()
