"""Per-method presets applied by `experiments/sweep.py` before the command-line overrides.

Only what differs between methods lives here; everything else (batch size, epochs, the
task's own settings) comes from the config file. A sweep applies, in order: the config
file (`configs/glue_<task>.py` when it exists), `method_preset(config, method)`, then the
`--config.x=y` overrides, so an override always wins over a preset.
"""

from __future__ import annotations

import ast
from typing import Any, Callable, Iterable

import ml_collections

from adamix_jax import config_fields, methods

MIXTURES = ('adamix', 'adamix_lora')


def method_preset(config: ml_collections.ConfigDict, method: str
                  ) -> ml_collections.ConfigDict:
  """A copy of `config` set up for `method` (one of `methods.METHODS`)."""
  if method not in methods.METHODS:
    raise ValueError(f'Unknown method {method!r}; choose from {methods.METHODS}')
  config = ml_collections.ConfigDict(config.to_dict())
  config.method = method

  if method in MIXTURES:
    # AdaMix official script (microsoft/AdaMix roberta_large_mnli_expert_soup.sh):
    # --num_experts 4 --sharing_up 1 --sharing_down 0 --use_consistency_loss 1, i.e. four
    # experts sharing one up (LoRA: B) projection and the consistency loss with weight 1.
    config.consistency_weight = 1.0
    config.adapter.num_experts = 4
    config.adapter.share_up = True
    config.adapter.share_down = False
  else:
    # The baselines of the AdaMix tables (adapter, LoRA, BitFit, full fine-tuning) are
    # trained without any consistency (R-Drop-style) term.
    config.consistency_weight = 0.0

  if method in ('lora', 'adamix_lora'):
    # LoRA (Hu et al., 2021) adapts W_q and W_v only in its GLUE experiments; rank 8 and
    # alpha 16 as in microsoft/LoRA examples/NLU/roberta_large_sst2.sh.
    config.adapter.lora_rank = 8
    config.adapter.lora_alpha = 16.0
    config.adapter.lora_targets = ('query', 'value')

  if method == 'full':
    # Full fine-tuning updates every weight; RoBERTa (Liu et al., 2019, Table 10) tunes
    # GLUE over lr in {1e-5, 2e-5, 3e-5}: take the low end (the adapter rate of 4e-4
    # would wreck the pretrained weights).
    config.learning_rate = 1e-5
  elif method == 'bitfit':
    # BitFit (Ben Zaken et al., 2022) searches lr in {1e-4, 4e-4, 7e-4, 1e-3}: bias-only
    # updates want a larger rate than adapters; we take the top of that grid.
    config.learning_rate = 1e-3
  # adapter, lora, head_only, adamix, adamix_lora keep the config's learning rate (the
  # AdaMix and LoRA scripts use 3e-4 to 5e-4, the default's 4e-4 range).
  return config


def parse_value(text: str) -> Any:
  """A command-line value: a Python literal (1e-3, True, (1, 2)), true/false in any case
  (as shells and YAML spell them), or else the bare string."""
  if text.lower() in ('true', 'false'):
    return text.lower() == 'true'
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def parse_method_overrides(items: Iterable[str]) -> dict[str, dict[str, Any]]:
  """'method:dotted.field=value' items -> {method: {dotted.field: value}}."""
  per_method: dict[str, dict[str, Any]] = {}
  for item in items:
    method, colon, rest = item.partition(':')
    key, eq, value = rest.partition('=')
    if not colon or not eq or not key.strip() or method not in methods.METHODS:
      raise ValueError(f'{item!r}: expected method:dotted.field=value with a method among '
                       f'{methods.METHODS}')
    per_method.setdefault(method, {})[key.strip()] = parse_value(value.strip())
  return per_method


def preset_with(per_method: dict[str, dict[str, Any]]
                ) -> Callable[[ml_collections.ConfigDict, str], ml_collections.ConfigDict]:
  """`method_preset`, then the overrides for that method only (e.g. a learning rate for
  `full` alone in a sweep that sets another for the adapters)."""
  def preset(config: ml_collections.ConfigDict, method: str) -> ml_collections.ConfigDict:
    config = method_preset(config, method)
    for key, value in per_method.get(method, {}).items():
      try:
        config_fields.set_field(config, key, value)
      except ValueError as e:
        raise ValueError(f'{method}:{e}') from None
    return config
  return preset
