"""Every shipped config builds and passes validation; the official values are where stated."""

from __future__ import annotations

import importlib
import re
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


def _fidelity_row(element: str) -> str:
  """The 'official' cell of the README's fidelity table row for `element`."""
  readme = (Path(__file__).resolve().parents[1] / 'README.md').read_text()
  for line in readme.splitlines():
    cells = [c.strip() for c in line.strip().strip('|').split('|')]
    if len(cells) == 4 and cells[0] == element:
      return cells[1]
  raise AssertionError(f'README fidelity table has no row {element!r}')


def test_paper_configs_carry_the_official_values_the_readme_states():
  """Every paper config (`glue_*`: RoBERTa-large, `bert_base_glue_*`) against the fidelity
  table's official cells, read from the README: the two cannot drift apart."""
  hyper = _fidelity_row('hyper-parameters')
  roberta = re.search(r'RoBERTa-large: lr ([0-9.e-]+), batch (\d+), (\d+) epochs, r = (\d+)', hyper)
  bert = re.search(r'BERT-base: lr ([0-9.e-]+), (\d+) epochs, r = (\d+)', hyper)
  length = int(re.search(r'length (\d+)', hyper).group(1))
  clip = float(re.search(r'`max_grad_norm` ([0-9.]+)', _fidelity_row('clipping')).group(1))
  decay = float(re.search(r'--weight_decay ([0-9.]+)', _fidelity_row('decay set')).group(1))
  experts = int(re.search(r'--num_experts (\d+)', _fidelity_row('experts')).group(1))
  warmup = float(re.search(r'ceil\(([0-9.]+) ·', _fidelity_row('schedule')).group(1))
  names = [n for n in CONFIGS if n.startswith(('glue_', 'bert_base_glue_'))]
  assert len(names) == 16, names
  for name in names:
    c = importlib.import_module(f'configs.{name}').get_config()
    if name.startswith('glue_'):
      lr, batch, epochs, size = roberta.groups()
      # MNLI has the official script; the small tasks train longer (marked *ours*).
      epochs = int(epochs) if name == 'glue_mnli' else c.num_epochs
    else:
      lr, epochs, size = bert.groups()
      batch = roberta.group(2)  # both scripts: batch 64
    got = (c.learning_rate, c.batch_size, c.num_epochs, c.adapter.adapter_size,
           c.data.max_length, c.grad_clip_norm, c.weight_decay, c.adapter.num_experts,
           c.warmup_ratio, c.expert_updates, c.eval_mode, c.adapter.share_up,
           c.adapter.share_down)
    want = (float(lr), int(batch), int(epochs), int(size), length, clip, decay, experts,
            warmup, 'official', 'merged', True, False)
    assert got == want, (name, got, want)


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
