"""Sweeps: the run layout, presets under command-line overrides, task config files, and a
real two-seed, two-method sweep that skips its finished runs when re-run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adamix_jax import sweep
from adamix_jax.data import SAMPLES_DIR
from configs.presets import method_preset

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / 'configs' / 'tiny.py'


def _plan(**kwargs):
  kwargs.setdefault('tasks', None)
  kwargs.setdefault('methods', None)
  kwargs.setdefault('seeds', [1, 2])
  return sweep.plan(TINY, '/sweep', preset=method_preset, **kwargs)


def test_runs_go_to_task_method_seed_dirs_in_order():
  runs = _plan(methods=['adamix', 'lora'])
  assert [(r.task, r.method, r.seed, str(r.workdir)) for r in runs] == [
      ('sst2', 'adamix', 1, '/sweep/sst2/adamix/seed_1'),
      ('sst2', 'adamix', 2, '/sweep/sst2/adamix/seed_2'),
      ('sst2', 'lora', 1, '/sweep/sst2/lora/seed_1'),
      ('sst2', 'lora', 2, '/sweep/sst2/lora/seed_2'),
  ]
  assert [(r.config.method, r.config.seed, r.config.data.task) for r in runs[1:3]] == [
      ('adamix', 2, 'sst2'), ('lora', 1, 'sst2')]


def test_presets_set_each_method_and_overrides_win():
  runs = {r.method: r.config for r in _plan(
      methods=['adamix', 'adamix_lora', 'adapter', 'lora', 'bitfit', 'full', 'head_only'],
      seeds=[0])}
  tiny_lr = 1e-2
  assert runs['adamix'].consistency_weight == 1.0
  assert runs['adamix'].adapter.num_experts == 4  # tiny.py says 3
  assert runs['adamix'].adapter.share_up and not runs['adamix'].adapter.share_down
  assert runs['adamix_lora'].adapter.lora_rank == 8 and runs['adamix_lora'].adapter.num_experts == 4
  for method in ('adapter', 'lora', 'bitfit', 'full', 'head_only'):
    assert runs[method].consistency_weight == 0.0, method
  assert (runs['lora'].adapter.lora_rank, runs['lora'].adapter.lora_alpha,
          tuple(runs['lora'].adapter.lora_targets)) == (8, 16.0, ('query', 'value'))
  assert runs['full'].learning_rate == 1e-5 and runs['bitfit'].learning_rate == 1e-3
  assert runs['adapter'].learning_rate == runs['adamix'].learning_rate == tiny_lr
  # Command-line overrides come after the presets.
  overridden = {r.method: r.config for r in _plan(
      methods=['adamix', 'lora', 'full'], seeds=[0],
      overrides={'consistency_weight': 0.5, 'learning_rate': 3e-3,
                 'adapter.lora_rank': 2})}
  for config in overridden.values():
    assert (config.consistency_weight, config.learning_rate) == (0.5, 3e-3)
  assert overridden['lora'].adapter.lora_rank == 2


def test_other_tasks_load_their_own_config_file(tmp_path):
  # tiny_sst2.py -> tiny_rte.py by name; else glue_<task>.py; else the base file.
  for name, lr in (('tiny_sst2', 0.1), ('tiny_rte', 0.2), ('glue_qnli', 0.3)):
    (tmp_path / f'{name}.py').write_text(
        'from configs import tiny\n\n\ndef get_config():\n  config = tiny.get_config()\n'
        f"  config.data.task = '{name.split('_')[1]}'\n  config.learning_rate = {lr}\n"
        '  return config\n')
  runs = sweep.plan(tmp_path / 'tiny_sst2.py', tmp_path / 'root',
                    tasks=['SST-2', 'rte', 'qnli', 'cola'], methods=['adapter'], seeds=[0],
                    preset=method_preset)
  assert [(r.task, r.config_file.name, r.config.learning_rate, r.config.data.task)
          for r in runs] == [('sst2', 'tiny_sst2.py', 0.1, 'sst2'),
                             ('rte', 'tiny_rte.py', 0.2, 'rte'),
                             ('qnli', 'glue_qnli.py', 0.3, 'qnli'),
                             ('cola', 'tiny_sst2.py', 0.1, 'cola')]


@pytest.mark.parametrize('kwargs, message', [
    ({'overrides': {'seed': 3}}, r'--config.seed is set per run'),
    ({'overrides': {'data.task': 'rte'}}, r'--config.data.task is set per run'),
    ({'methods': ['adamix', 'magic']}, "Unknown method 'magic'"),
    ({'seeds': [1, 1]}, 'repeats a value'),
    ({'methods': ['adamix'], 'overrides': {'adapter.num_experts': 0}}, 'num_experts=0'),
])
def test_bad_sweeps_fail_before_training(kwargs, message):
  with pytest.raises(ValueError, match=message):
    _plan(**kwargs)


def _small_glue_dir(path: Path) -> Path:
  (path / 'SST-2').mkdir(parents=True)
  for split, rows in (('train', 64), ('dev', 24)):
    lines = (SAMPLES_DIR / 'SST-2' / f'{split}.tsv').read_text().splitlines()
    (path / 'SST-2' / f'{split}.tsv').write_text('\n'.join(lines[:rows + 1]) + '\n')
  return path


def test_sweep_cli_trains_each_run_once_with_its_preset(tiny_checkpoint, tmp_path):
  root = tmp_path / 'sweep'
  command = [sys.executable, '-m', 'experiments.sweep', '--config=configs/tiny.py',
             f'--workdir={root}', '--seeds=1,2', '--methods=adamix,lora',
             f'--config.model.checkpoint={tiny_checkpoint}',
             f'--config.data.data_dir={_small_glue_dir(tmp_path / "glue")}',
             '--config.num_train_steps=2', '--config.eval_every_steps=2',
             '--config.export=False']
  # The second seed of each method reuses the first one's compiled steps (the test run's
  # compilation cache, conftest).
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  assert '4 runs: 4 trained, 0 skipped' in out.stdout
  finished = sorted(p.relative_to(root).as_posix() for p in root.rglob('results.json'))
  assert finished == [f'sst2/{m}/seed_{s}/results.json'
                      for m in ('adamix', 'lora') for s in (1, 2)]
  for method in ('adamix', 'lora'):
    for seed in (1, 2):
      workdir = root / 'sst2' / method / f'seed_{seed}'
      results = json.loads((workdir / 'results.json').read_text())
      assert (results['task'], results['method'], results['seed']) == ('sst2', method, seed)
      assert results['final']['step'] == 2
      config = json.loads((workdir / 'config.json').read_text())
      logged = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]
      consistency = [l['train/consistency_loss'] for l in logged if 'train/loss' in l]
      if method == 'adamix':  # preset: 4 experts (tiny.py: 3), consistency on
        assert config['consistency_weight'] == 1.0 and config['adapter']['num_experts'] == 4
        assert all(c > 0 for c in consistency)
      else:  # preset: no consistency, rank 8 (tiny.py: 2)
        assert config['consistency_weight'] == 0.0 and config['adapter']['lora_rank'] == 8
        assert consistency and all(c == 0 for c in consistency)
        assert results['parameters']['trainable_backbone'] == 2 * 2 * (32 * 8 + 8 * 32)
  # Re-running the same command trains nothing and touches no file of the runs.
  before = {p: p.stat().st_mtime_ns for p in root.rglob('*') if p.is_file()}
  again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
  assert again.returncode == 0, again.stderr[-3000:]
  assert '4 runs: 0 trained, 4 skipped' in again.stdout
  assert {p: p.stat().st_mtime_ns for p in root.rglob('*') if p.is_file()} == before
  # Another learning rate into the same root: refused (it would report the old runs).
  changed = subprocess.run(command + ['--config.learning_rate=0.5'], cwd=ROOT, env=env,
                           capture_output=True, text=True)
  assert changed.returncode != 0
  assert '4 run(s) of this sweep were trained with another config' in changed.stderr
  assert 'learning_rate: 0.01 -> 0.5' in changed.stderr and 'Traceback' not in changed.stderr
  assert {p: p.stat().st_mtime_ns for p in root.rglob('*') if p.is_file()} == before


def test_gs_root_keeps_its_scheme():
  runs = sweep.plan(TINY, 'gs://bucket/sweep', tasks=None, methods=['lora'], seeds=[1],
                    preset=method_preset)
  assert str(runs[0].workdir) == 'gs://bucket/sweep/sst2/lora/seed_1'  # not gs:/bucket/...


def test_config_changes_compare_the_fields_both_sides_have(tmp_path):
  run = sweep.plan(TINY, tmp_path, tasks=None, methods=['lora'], seeds=[1],
                   preset=method_preset)[0]
  assert sweep.config_changes(run) == []  # a new run
  saved = json.loads(run.config.to_json_best_effort())
  del saved['data']['bucket_size']  # a field older code did not have
  saved['removed_field'] = 1  # and one it had
  run.workdir.mkdir(parents=True)
  (run.workdir / 'config.json').write_text(json.dumps(saved))
  assert sweep.config_changes(run) == []
  saved['adapter']['lora_rank'] = 4
  (run.workdir / 'config.json').write_text(json.dumps(saved))
  assert sweep.config_changes(run) == ['adapter.lora_rank: 4 -> 8']
  assert sweep.status(run) == ('STALE', '\n    adapter.lora_rank: 4 -> 8')
  with pytest.raises(ValueError, match=r'seed_1: adapter.lora_rank: 4 -> 8'):
    sweep.run_sweep([run])
