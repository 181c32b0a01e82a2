"""End-to-end training: outputs, exact resume, frozen backbone, export reload, bad input."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import chex
import jax
import numpy as np
import pytest
from flax import traverse_util

from adamix_jax import (checkpoints, evaluation, export, hf_checkpoint, methods, metric_logs,
                        optim, runs, sharding, train)
from adamix_jax.model import from_pretrained
from configs import tiny
from conftest import xla_flags

ROOT = Path(__file__).resolve().parents[1]


def _config(checkpoint, **overrides):
  config = tiny.get_config()
  config.model.checkpoint = str(checkpoint)
  for key, value in overrides.items():
    target = config
    *parents, leaf = key.split('.')
    for p in parents:
      target = target[p]
    target[leaf] = value
  return config


def _final_params(workdir: Path, config):
  """The trainable parameters of the latest checkpoint in `workdir`."""
  run, trainable = runs.build_run(config, workdir)
  tx, _ = optim.make_optimizer(config, 10, run.adaptation, trainable)
  state = train.create_train_state(trainable, tx)
  manager = checkpoints.checkpoint_manager(workdir / 'checkpoints', 2)
  restored, _, _ = checkpoints.restore(manager, train.abstract_state(state))
  return restored.params, run


@pytest.fixture(scope='module')
def trained(tiny_checkpoint, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('run')
  config = _config(tiny_checkpoint)
  results = train.train_and_evaluate(config, workdir)
  return config, workdir, results


def test_run_writes_checkpoints_events_metrics_and_export(trained):
  config, workdir, results = trained
  assert sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir()
                if p.name.isdigit()) == [4, 6]
  assert list(workdir.glob('events.out.tfevents.*'))
  lines = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert {l['step'] for l in lines if 'train/loss' in l} == {2, 4, 6}
  assert {l['step'] for l in lines if 'eval/accuracy' in l} == {3, 6}
  assert all(np.isfinite(l['train/loss']) for l in lines if 'train/loss' in l)
  assert all(l['train/consistency_loss'] > 0 for l in lines if 'train/loss' in l)
  assert (workdir / 'export' / 'adapter.safetensors').is_file()
  saved = json.loads((workdir / 'results.json').read_text())
  assert saved['final']['step'] == 6
  assert saved['eval_splits'] == ['dev']
  assert saved['best']['step'] in (3, 6)
  assert 0.0 <= saved['final']['metrics']['accuracy'] <= 1.0


def test_export_reload_reproduces_eval_metrics(trained):
  config, workdir, results = trained
  info = export.read_info(workdir / 'export')
  assert info['merged_method'] == 'adapter' and info['labels'] == ['0', '1']
  # Only the merged adapters and the head are exported: a single expert's shapes.
  tensors = info['shapes']
  assert tensors['backbone/layer_0/output/adapter/down_kernel'] == [32, 4]
  assert all(k.startswith('classifier/') or '/adapter/' in k for k in tensors)
  model, params, _ = export.load_export(workdir / 'export')
  run, _ = runs.build_run(config, workdir)
  run.model, run.adaptation = model, model.adaptation
  again = evaluation.evaluate(run, params, step=results['best']['step'])
  assert again == pytest.approx(results['best']['metrics'], abs=1e-9)


def test_export_missing_a_tensor_is_refused(trained, tmp_path):
  import shutil
  from safetensors.numpy import load_file, save_file
  _, workdir, _ = trained
  copy = Path(shutil.copytree(workdir / 'export', tmp_path / 'export'))
  tensors = load_file(str(copy / export.TENSORS))
  dropped = sorted(tensors)[0]
  del tensors[dropped]
  save_file(tensors, str(copy / export.TENSORS))
  with pytest.raises(ValueError, match=rf'lacks tensors that export.json lists \(1\): {dropped}'):
    export.load_export(copy)
  data = (copy / export.TENSORS).read_bytes()
  (copy / export.TENSORS).write_bytes(data[:len(data) // 2])
  with pytest.raises(ValueError, match=rf'{export.TENSORS}: not a readable safetensors file'):
    export.load_export(copy)


def test_repeated_evaluation_reuses_the_compiled_predict(trained):
  config, workdir, results = trained
  final, run = _final_params(workdir, config)
  params = methods.combine(final, run.frozen)
  first = evaluation.evaluate(run, params, step=0)
  compiled = evaluation._predict._cache_size()
  assert compiled >= 1
  for step in (1, 2):
    assert evaluation.evaluate(run, params, step=step) == first
  assert evaluation._predict._cache_size() == compiled


def test_train_step_and_evaluation_import_without_tensorflow():
  # The GPU images have no TensorFlow; only the training loop's clu writers need it.
  code = ("import sys; sys.modules['tensorflow'] = None\n"
          "from adamix_jax import train, inference\n"
          "from benchmarks import gpu_step\n"
          "assert 'clu.metric_writers' not in sys.modules\n")
  subprocess.run([sys.executable, '-c', code], cwd=ROOT, check=True, timeout=300)


def test_frozen_backbone_is_bit_identical_after_training(trained, tiny_checkpoint):
  config, workdir, _ = trained
  trainable, run = _final_params(workdir, config)
  _, loaded, _ = from_pretrained(tiny_checkpoint, adaptation=run.adaptation,
                                 num_labels=2, rng=jax.random.PRNGKey(config.seed))
  flat_loaded = traverse_util.flatten_dict(loaded)
  flat_frozen = traverse_util.flatten_dict(jax.device_get(run.frozen))
  assert flat_frozen, 'nothing frozen'
  for path, value in flat_frozen.items():
    np.testing.assert_array_equal(value, flat_loaded[path], err_msg='/'.join(path))
  # ...and the trainable set is exactly the adapters and the head, and it changed.
  flat_trainable = traverse_util.flatten_dict(jax.device_get(trainable))
  assert all(p[0] == 'classifier' or 'adapter' in p for p in flat_trainable)
  changed = [p for p, v in flat_trainable.items() if not np.array_equal(v, flat_loaded[p])]
  assert any('adapter' in p for p in changed)


def test_resume_after_interruption_is_bit_identical(tiny_checkpoint, tmp_path, monkeypatch,
                                                    trained):
  config, reference_dir, reference = trained
  calls = {'n': 0}
  original = sharding.put_batch

  def interrupt_at_step_5(batch, mesh):
    calls['n'] += 1
    if calls['n'] == 5:
      raise KeyboardInterrupt('simulated preemption')
    return original(batch, mesh)

  monkeypatch.setattr(sharding, 'put_batch', interrupt_at_step_5)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(_config(tiny_checkpoint), tmp_path)
  monkeypatch.setattr(sharding, 'put_batch', original)
  assert not (tmp_path / 'results.json').exists()
  resumed = train.train_and_evaluate(_config(tiny_checkpoint), tmp_path)
  assert resumed['final'] == reference['final']
  assert resumed['best'] == reference['best']
  mine, _ = _final_params(tmp_path, config)
  theirs, _ = _final_params(reference_dir, config)
  chex.assert_trees_all_equal(jax.device_get(mine), jax.device_get(theirs))
  steps = [json.loads(l)['step'] for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert steps == sorted(steps)  # the replayed steps were not logged twice


def test_sigkill_and_rerun_same_command_ends_like_uninterrupted(tiny_checkpoint, tmp_path,
                                                               trained):
  _, _, reference = trained
  cmd = [sys.executable, '-m', 'experiments.main', '--config=configs/tiny.py',
         f'--config.model.checkpoint={tiny_checkpoint}', f'--workdir={tmp_path}']
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    steps = [p for p in (tmp_path / 'checkpoints').glob('[0-9]*')] if (
        tmp_path / 'checkpoints').exists() else []
    if steps:
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (tmp_path / 'results.json').exists(), 'the run finished before it was killed'
  rerun = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
  resumed = json.loads((tmp_path / 'results.json').read_text())
  assert resumed['final'] == reference['final']
  # The console: the project's lines only (other libraries' INFO is dropped): one progress
  # line per log interval, one line per evaluation.
  output = (rerun.stdout + rerun.stderr).splitlines()
  assert any(re.search(r'step 6/6 · [0-9.]+ steps/s · ETA \S+ · loss [0-9.]+ · lr ', line)
             for line in output), output
  assert any(re.search(r'step 6 eval \(merged\): accuracy [0-9.]+', line) for line in output)
  for noise in ('checkpoint_manager.py', 'logging_writer.py', 'xla_bridge', 'oneDNN'):
    assert not any(noise in line for line in output), (noise, output)
  assert len(output) < 25, output


def test_cli_reports_a_refused_config_in_one_line_without_traceback(tmp_path):
  cmd = [sys.executable, '-m', 'experiments.main', '--config=configs/tiny.py',
         '--config.model.checkpoint=unused', f'--workdir={tmp_path / "run"}',
         '--config.learning_rate=nan']
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  quiet = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
  assert quiet.returncode == 1
  assert quiet.stderr.strip().splitlines()[-1] == (
      'error: config.learning_rate=nan must be a finite number > 0')
  assert 'Traceback' not in quiet.stderr + quiet.stdout
  assert not (tmp_path / 'run').exists()
  verbose = subprocess.run(cmd + ['--verbosity=1'], cwd=ROOT, env=env, capture_output=True,
                           text=True)
  assert verbose.returncode != 0 and 'Traceback' in verbose.stderr


@pytest.mark.parametrize('override, message', [
    ({'method': 'magic'}, "config.method='magic' is unknown"),
    ({'data.task': 'nope'}, 'nope'),
    ({'adapter.adapter_size': 0}, 'adapter_size=0'),
    ({'adapter.adapter_size': 32}, 'adapter_size=32'),
    ({'adapter.num_experts': 0}, 'num_experts=0'),
    ({'eval_mode': 'vote'}, 'eval_mode'),
    ({'model.attention': 'flash'}, "model.attention='flash'"),
    ({'model.remat': 'all'}, "model.remat='all'"),
    ({'data.max_length': 65}, 'max_length=65 exceeds the 64 tokens'),
    ({'lora_merge': 'median'}, "lora_merge='median'"),
    ({'method': 'adamix_lora', 'merge': 'fisher', 'lora_merge': 'mean_delta'},
     "cannot give config.lora_merge='mean_delta'"),
])
def test_bad_config_fails_before_writing(tiny_checkpoint, tmp_path, override, message):
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(_config(tiny_checkpoint, **override), tmp_path / 'w')
  assert not (tmp_path / 'w').exists() or not any((tmp_path / 'w').iterdir())


def test_fused_attention_reaches_the_trained_model(tiny_checkpoint, tmp_path):
  run, _ = runs.build_run(_config(tiny_checkpoint, **{'model.attention': 'fused'}), tmp_path)
  assert run.model.attention == 'fused'


def test_checkpoint_directory_without_config_is_named_before_the_tokenizer(tiny_checkpoint,
                                                                         tmp_path):
  empty = tmp_path / 'not_a_checkpoint'
  empty.mkdir()
  with pytest.raises(hf_checkpoint.CheckpointError, match='not_a_checkpoint holds no config.json'):
    runs.build_run(_config(tiny_checkpoint, **{'model.checkpoint': str(empty)}), tmp_path / 'w')


def test_remat_reaches_the_trained_model(tiny_checkpoint, tmp_path, monkeypatch, caplog):
  # On CPU it needs the memory-ordered scheduler at start-up: said when XLA_FLAGS lacks it.
  monkeypatch.setenv('XLA_FLAGS', xla_flags('--xla_force_host_platform_device_count=1'))
  with caplog.at_level('WARNING'):
    run, _ = runs.build_run(_config(tiny_checkpoint, **{'model.remat': 'dots'}), tmp_path)
  assert run.model.remat == 'dots'
  assert runs.CPU_MEMORY_SCHEDULER in caplog.text
  caplog.clear()
  monkeypatch.setenv('XLA_FLAGS', xla_flags(runs.CPU_MEMORY_SCHEDULER))
  with caplog.at_level('WARNING'):
    runs.build_run(_config(tiny_checkpoint, **{'model.remat': 'dots'}), tmp_path)
  assert runs.CPU_MEMORY_SCHEDULER not in caplog.text


def test_batch_not_divisible_by_devices(tiny_checkpoint, tmp_path):
  with pytest.raises(ValueError, match='not divisible by the 8 devices'):
    runs.validate_config(_config(tiny_checkpoint, batch_size=12), num_devices=8)


@pytest.mark.parametrize('field, value, message', [
    ('learning_rate', float('nan'), r'config\.learning_rate=nan must be a finite number > 0'),
    ('learning_rate', 0.0, r'config\.learning_rate=0\.0 must be a finite number > 0'),
    ('learning_rate', float('inf'), r'learning_rate=inf'),
    ('weight_decay', -0.1, r'config\.weight_decay=-0\.1 must be a finite number >= 0'),
    ('consistency_weight', float('nan'), r'consistency_weight=nan'),
    ('grad_clip_norm', -1.0, r'grad_clip_norm=-1\.0'),
    ('adam_eps', 0.0, r'adam_eps=0\.0'),
    ('adam_b2', 1.0, r'config\.adam_b2=1\.0 must be in \[0, 1\)'),
    ('warmup_ratio', 1.5, r'config\.warmup_ratio=1\.5 must be in \[0, 1\]'),
    ('eval_expert', 3, r'config\.eval_expert=3 is out of range: config\.adapter\.num_experts=3'),
])
def test_bad_optimizer_and_evaluation_settings_are_refused_before_training(
    tiny_checkpoint, field, value, message):
  config = _config(tiny_checkpoint, **{field: value, 'eval_mode': 'expert'})
  with pytest.raises(ValueError, match=message):
    runs.validate_config(config)


def test_good_edge_settings_pass_validation(tiny_checkpoint):
  runs.validate_config(_config(tiny_checkpoint, warmup_ratio=1.0, weight_decay=0.0,
                               eval_mode='expert', eval_expert=2))


def test_foreign_checkpoint_is_refused_and_kept(trained, tiny_checkpoint):
  config, workdir, _ = trained
  before = {p: p.stat().st_mtime_ns for p in (workdir / 'checkpoints').rglob('*')}
  with pytest.raises(ValueError, match=r'num_experts.*another --workdir|different run'):
    train.train_and_evaluate(_config(tiny_checkpoint, **{'adapter.num_experts': 2}), workdir)
  after = {p: p.stat().st_mtime_ns for p in (workdir / 'checkpoints').rglob('*')}
  assert before == after


def test_unknown_config_field_is_rejected_by_the_cli(tmp_path):
  out = subprocess.run([sys.executable, '-m', 'experiments.main', '--config=configs/tiny.py',
                        '--config.no_such_field=1', f'--workdir={tmp_path}'], cwd=ROOT,
                       capture_output=True, text=True)
  assert out.returncode != 0
  assert 'no_such_field' in out.stderr


def test_fisher_merge_is_used_for_evaluation_and_export(tiny_checkpoint, tmp_path):
  config = _config(tiny_checkpoint, merge='fisher', fisher_batches=2, num_train_steps=2,
                   eval_every_steps=2)
  results = train.train_and_evaluate(config, tmp_path)
  run, trainable = runs.build_run(config, tmp_path)
  final, _ = _final_params(tmp_path, config)
  params = methods.combine(final, run.frozen)
  fisher_params, _ = evaluation.merge_for_inference(run, params)
  from adamix_jax import merging
  mean_params, _ = merging.merge_experts(params, run.adaptation)
  key = ('backbone', 'layer_0', 'output', 'adapter', 'down_kernel')
  flat_f, flat_m = (traverse_util.flatten_dict(p) for p in (fisher_params, mean_params))
  assert not np.allclose(flat_f[key], flat_m[key])  # a different merge...
  model, exported, _ = export.load_export(tmp_path / 'export')
  np.testing.assert_allclose(traverse_util.flatten_dict(exported)[key], flat_f[key],
                             rtol=1e-6)  # ...is what was exported
  assert evaluation.evaluate(run, params, step=2) == pytest.approx(results['final']['metrics'])


def test_best_evaluation_with_nan_scores():
  """A NaN score (Pearson of constant predictions) still leaves a best checkpoint to export,
  and never replaces a number; a number replaces it."""
  def pick(values):
    best = {'value': float('-inf'), 'step': -1}
    for step, value in enumerate(values, 1):
      if evaluation.is_new_best(value, best):
        best = {'value': value, 'step': step}
    return best['step']

  nan = float('nan')
  assert pick([nan, nan]) == 1
  assert pick([nan, 0.3, nan, 0.5, 0.4]) == 4
  assert pick([0.2, nan, 0.1]) == 1


def test_gs_run_directories_keep_their_scheme(tmp_path, monkeypatch):
  """pathlib turned gs://bucket/run into gs:/bucket/run, a folder on the local disk; the
  run's files (metrics, export) now go through epath, here with gs:// redirected to disk."""
  from etils import epath
  from etils.epath import testing as epath_testing
  from adamix_jax.adapters import AdaptationConfig
  from adamix_jax.data.tasks import get_task
  local = lambda path: str(path).replace('gs://', f'{tmp_path}/gcs/', 1)
  redirect = lambda original, path, *args, **kwargs: original(local(path), *args, **kwargs)
  seen = []
  record = lambda original, path, *args, **kwargs: (seen.append(str(path)),
                                                    redirect(original, path, *args, **kwargs))[1]
  # epath picks TensorFlow's gfile for gs:// when TensorFlow is installed; the mock replaces
  # the other backends only.
  from etils.epath import gpath
  monkeypatch.setattr(gpath, '_is_tf_installed', lambda: False)
  with epath_testing.mock_epath(open=record, exists=redirect, makedirs=redirect,
                                mkdir=redirect, isdir=redirect, stat=redirect):
    run = epath.Path('gs://bucket/run')
    assert str(run / 'export') == 'gs://bucket/run/export'
    run.mkdir(parents=True)
    jsonl = metric_logs.JsonlWriter(run / 'metrics.jsonl', True)
    jsonl.write(1, {'loss': 0.5})
    jsonl.write(2, {'loss': 0.25})
    jsonl.truncate_after(1)
    export.write_export(run / 'export', {'x': np.arange(3.0)}, base_checkpoint='base',
                        method='lora', merged_method='lora', adaptation=AdaptationConfig(),
                        task=get_task('sst2'), max_length=8)
    assert export.read_info('gs://bucket/run/export')['shapes'] == {'x': [3]}
  assert (tmp_path / 'gcs/bucket/run/metrics.jsonl').read_text() == '{"step": 1, "loss": 0.5}\n'
  from safetensors.numpy import load_file
  np.testing.assert_array_equal(
      load_file(str(tmp_path / 'gcs/bucket/run/export' / export.TENSORS))['x'], np.arange(3.0))
  assert 'gs://bucket/run/export/adapter.safetensors' in seen
