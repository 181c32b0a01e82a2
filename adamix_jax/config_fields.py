"""Helpers for ml_collections configs that config files may import (no JAX, no trainer)."""

from __future__ import annotations

from typing import Any

import ml_collections


class ConfigError(ValueError):
  """A config field holds a value the run cannot use (named in the message)."""


def set_field(config: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
  """Sets an existing config field by its dotted name ('adapter.num_experts')."""
  *parents, leaf = dotted.split('.')
  for name in parents:
    if name not in config:
      raise ValueError(f'{dotted}: no config field {name!r}')
    config = config[name]
  if leaf not in config:
    raise ValueError(f'{dotted}: no config field {leaf!r}')
  config[leaf] = value
