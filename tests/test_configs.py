"""Every shipped config builds and passes validation; the official values are where stated."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from adamix_jax import runs
from adamix_jax.data import readers

CONFIGS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / 'configs').glob('*.py')
                 if p.stem not in ('__init__', 'glue', 'presets'))


@pytest.mark.parametrize('name', CONFIGS)
def test_config_builds_and_validates(name):
  config = importlib.import_module(f'configs.{name}').get_config()
  runs.validate_config(config)
  runs.adaptation_from_config(config)
  readers.task_from_config(config.data)


def test_official_mnli_settings():
  from configs import bert_base_glue_mnli, glue_mnli
  c = glue_mnli.get_config()
  assert (c.learning_rate, c.num_epochs, c.batch_size, c.data.max_length) == (3e-4, 20, 64, 128)
  assert (c.warmup_ratio, c.weight_decay, c.adapter.adapter_size) == (0.06, 0.1, 16)
  assert (c.adapter.num_experts, c.adapter.share_up, c.consistency_weight) == (4, True, 1.0)
  b = bert_base_glue_mnli.get_config()
  assert (b.learning_rate, b.num_epochs, b.adapter.adapter_size) == (4e-4, 40, 48)


def test_method_overrides_parse_literals_and_name_bad_items():
  from configs import presets
  parsed = presets.parse_method_overrides(
      ['full:learning_rate=5e-5', 'adamix:adapter.num_experts=2', 'lora:model.pooling=mean'])
  assert parsed == {'full': {'learning_rate': 5e-5}, 'adamix': {'adapter.num_experts': 2},
                    'lora': {'model.pooling': 'mean'}}
  for bad in ('learning_rate=1', 'fulll:learning_rate=1', 'full:learning_rate'):
    with pytest.raises(ValueError, match=bad):
      presets.parse_method_overrides([bad])


def test_command_line_values_parse_the_same_everywhere():
  from configs import presets
  cases = {'5e-5': 5e-5, '2': 2, 'True': True, 'true': True, 'FALSE': False, 'None': None,
           '(1, 2)': (1, 2), 'mean': 'mean', 'roberta-large': 'roberta-large'}
  for text, value in cases.items():
    parsed = presets.parse_value(text)
    assert parsed == value and type(parsed) is type(value), text
  # The few-shot CLI's --override and the sweeps' --set read values with this one parser
  # (its own process: the CLIs' absl flags share names with the benchmarks').
  import subprocess
  import sys
  subprocess.run([sys.executable, '-c', 'from configs import presets; from experiments import '
                  'fewshot; assert fewshot.parse_value is presets.parse_value'],
                 cwd=Path(__file__).resolve().parents[1], check=True, timeout=300)


def test_fewshot_cli_rejects_a_bad_method_override(tmp_path):
  import subprocess
  import sys
  out = subprocess.run(
      [sys.executable, '-m', 'experiments.fewshot', f'--workdir={tmp_path}', '--tasks=sst2',
       '--method_override=fulll:learning_rate=1e-5'],
      cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
  assert out.returncode != 0 and 'fulll:learning_rate=1e-5' in out.stderr
  assert not any(tmp_path.iterdir())  # nothing trained or written
