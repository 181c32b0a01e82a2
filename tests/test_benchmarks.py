"""Benchmark scripts' pure parts (the benchmarks themselves are not tests)."""

from __future__ import annotations

import pytest

from benchmarks import quality
from configs import default


def test_method_set_overrides_only_its_method():
  preset = quality.plan_preset({'method_set': {'full': {'learning_rate': 5e-5}}})
  base = default.get_config()
  assert preset(base, 'full').learning_rate == 5e-5
  assert preset(base, 'adapter').learning_rate == base.learning_rate
  assert preset(base, 'adamix').consistency_weight == 1.0  # the method preset still applies


def test_method_set_names_an_unknown_field():
  preset = quality.plan_preset({'method_set': {'full': {'adapter.no_such': 1}}})
  with pytest.raises(ValueError, match='full:adapter.no_such'):
    preset(default.get_config(), 'full')
