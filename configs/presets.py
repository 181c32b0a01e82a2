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

from adamix_jax import config_fields, registry

MIXTURES = registry.MIXTURES


def method_preset(config: ml_collections.ConfigDict, method: str
                  ) -> ml_collections.ConfigDict:
  """A copy of `config` set up for `method`: `config.method` and the method's preset values
  (`adamix_jax.registry`; adapter, lora, head_only, adamix and adamix_lora keep the config's
  learning rate, the AdaMix and LoRA scripts' 3e-4 to 5e-4 range)."""
  preset = registry.get(method).preset
  config = ml_collections.ConfigDict(config.to_dict())
  config.method = method
  for field, value in preset.items():
    config_fields.set_field(config, field, value)
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
    if not colon or not eq or not key.strip() or method not in registry.METHODS:
      raise ValueError(f'{item!r}: expected method:dotted.field=value with a method among '
                       f'{", ".join(registry.NAMES)}')
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
