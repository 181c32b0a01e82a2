"""The few-shot protocol end to end: prompt head, LiST splits, every method, seeds, report."""

from __future__ import annotations

import json

import pytest

from adamix_jax import report, runs, sweep, train
from configs.fewshot import sst2
from configs.presets import method_preset

METHODS = ('adamix', 'adamix_lora', 'adapter', 'lora', 'bitfit', 'full')


def test_fewshot_protocol_every_method_two_seeds_report(tiny_mlm_checkpoint, tmp_path):
  overrides = {
      'model.checkpoint': str(tiny_mlm_checkpoint), 'num_train_steps': 2,
      'eval_every_steps': 2, 'checkpoint_every_steps': 2, 'data.max_length': 32,
      'adapter.adapter_size': 4, 'adapter.lora_rank': 2, 'export': False,
  }
  # Every method once; AdaMix with a second seed for the report's mean ± std (the cells'
  # arithmetic is tested in test_report.py).
  runs = [*sweep.plan('configs/fewshot/sst2.py', tmp_path, tasks=['sst2'], methods=METHODS,
                      seeds=[1], overrides=overrides, preset=method_preset),
          *sweep.plan('configs/fewshot/sst2.py', tmp_path, tasks=['sst2'],
                      methods=['adamix'], seeds=[2], overrides=overrides,
                      preset=method_preset)]
  outcome = sweep.run_sweep(runs)
  assert not outcome['failed'] and len(outcome['trained']) == len(METHODS) + 1
  for run in runs:
    results = json.loads((run.workdir / 'results.json').read_text())
    assert results['final']['step'] == 2
    assert 0 <= results['final']['metrics']['accuracy'] <= 1
    # Seed s trained on LiST split 30-s and was scored on the test file only.
    config = json.loads((run.workdir / 'config.json').read_text())
    assert config['model']['head'] == 'prompt' and config['seed'] == run.seed
  paths = report.write_report(tmp_path, tmp_path / 'report', which='final')
  table = paths['markdown'].read_text()
  rows = {method: next(line for line in table.splitlines() if line.startswith(f'| {method} '))
          for method in METHODS}
  assert '±' in rows['adamix'], rows  # mean ± std over its two seeds
  assert not any('±' in rows[m] for m in METHODS if m != 'adamix'), rows  # one seed each
  assert paths['plot'].read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_fewshot_seed_follows_run_seed():
  config = sst2.get_config()
  config.seed = 4
  assert runs.data_config(config).fewshot_seed == 4
  config.data.fewshot_seed = 2
  assert runs.data_config(config).fewshot_seed == 2


def test_prompt_head_with_head_only_is_refused(tiny_mlm_checkpoint):
  config = sst2.get_config()
  config.method = 'head_only'
  with pytest.raises(ValueError, match='trains nothing'):
    runs.validate_config(config)


def test_encoder_only_checkpoint_cannot_prompt(tiny_checkpoint, tmp_path):
  config = sst2.get_config()
  config.model.checkpoint = str(tiny_checkpoint)
  config.num_train_steps = 1
  config.data.max_length = 32  # within the tiny checkpoint's positions: the head is what is refused
  with pytest.raises(ValueError, match='no MLM head'):
    train.train_and_evaluate(config, tmp_path)


@pytest.mark.parametrize('method, trained', [('adamix', False), ('lora', False),
                                             ('bitfit', False), ('full', True)])
def test_mlm_head_stays_frozen_unless_full(method, trained):
  from adamix_jax import methods
  params = {'backbone': {'layer_0': {'output': {'dense': {'bias': 0, 'kernel': 0},
                                                'adapter': {'down_kernel': 0}},
                                     'attention': {'self': {'query': {'lora_a': 0}}}}},
            'mlm_head': {'bias': 0, 'dense': {'kernel': 0, 'bias': 0}}}
  import numpy as np
  from flax import traverse_util
  params = traverse_util.unflatten_dict({k: np.zeros(2) for k in
                                         traverse_util.flatten_dict(params)})
  flat = traverse_util.flatten_dict(methods.trainable_mask(params, method))
  assert {v for k, v in flat.items() if k[0] == 'mlm_head'} == {trained}


def test_fewshot_cli_checks_every_split_before_training(tmp_path):
  """The bundled copy has no MNLI test file: the sweep stops before training anything,
  naming the task, seed and file, instead of failing those runs one by one."""
  import subprocess
  import sys
  from pathlib import Path
  out = subprocess.run(
      [sys.executable, '-m', 'experiments.fewshot', f'--workdir={tmp_path}',
       '--tasks=sst2,mnli', '--methods=lora', '--seeds=1,2'],
      cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
  assert out.returncode != 0
  assert 'few-shot data is missing or unreadable (nothing was trained' in out.stderr
  assert 'mnli seed 1:' in out.stderr and 'mnli seed 2:' in out.stderr
  assert 'sst2 seed' not in out.stderr and 'Traceback' not in out.stderr
  assert not list(tmp_path.rglob('results.json')) and not list(tmp_path.rglob('config.json'))
