"""Benchmark scripts' pure parts (the benchmarks themselves are not tests)."""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import os
from pathlib import Path
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from absl import app

from adamix_jax import report
from benchmarks import common, diagnostics, quality, steptime
from experiments import cli
from configs import default

ROOT = Path(__file__).resolve().parents[1]


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


def test_gpu_variant_ablations_parse_and_reject_unknown_names():
  assert steptime.parse_variant('adamix+consistency') == dataclasses.replace(
      steptime.VARIANTS['adamix+consistency'], eval='')
  variant = steptime.parse_variant('adapter@fused@rbg@nodrop@remat_dots')
  assert (variant.name, variant.method, variant.consistency_weight) == (
      'adapter@fused@rbg@nodrop@remat_dots', 'adapter', 0.0)
  assert (variant.attention, variant.prng, variant.dropout, variant.remat) == (
      'fused', 'rbg', False, 'dots')
  assert variant.step and not variant.eval  # the GPU script times the step alone
  with pytest.raises(ValueError, match="Unknown variant 'adaptor'"):
    steptime.parse_variant('adaptor@fused')
  with pytest.raises(ValueError, match=r"Unknown variant 'adamix \[random\]'"):
    steptime.parse_variant('adamix [random]')  # not trained: no step to time
  with pytest.raises(ValueError, match=r"Unknown ablation\(s\) \['flash'\]"):
    steptime.parse_variant('adapter@flash')
  with pytest.raises(ValueError, match='choose one of remat, remat_dots'):
    steptime.parse_variant('adapter@remat@remat_dots')
  with pytest.raises(ValueError, match='choose one of rbg, unsafe_rbg'):
    steptime.parse_variant('adapter@unsafe_rbg@rbg')


def test_gpu_ablations_change_the_model_and_the_key_only_while_tracing():
  before = jax.config.jax_default_prng_impl
  with steptime.prng_impl('rbg'):
    assert jax.random.PRNGKey(0).shape == (4,)  # rbg keys: 4 words (threefry: 2)
  assert jax.config.jax_default_prng_impl == before
  assert jax.random.PRNGKey(0).shape == (2,)
  config = steptime.SHAPES['tiny']
  built = steptime.build(steptime.parse_variant('adapter@fused@nodrop@remat@rbg'), config,
                         None, dtype='bfloat16')
  model = built.model
  assert (model.attention, model.remat, model.dtype) == ('fused', 'full', jnp.bfloat16)
  assert model.config.hidden_dropout_prob == model.config.attention_probs_dropout_prob == 0
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype)
           for k, v in steptime.make_batch(config, 2, 8).items()}
  step = steptime.compile_step(built, batch, abstract=True)
  assert step.compiled is None and diagnostics.flops(step.lowered) > 0
  assert step.traced.args_info[0][0].rng.shape == (4,)  # the state's key drawn with rbg


def test_gpu_merge_keeps_each_call_and_prefers_same_call_ratios():
  def call(rate, **steps):
    return {'device': 'gpu: X', 'shape': 'roberta-large', 'batch': 64, 'length': 128,
            'dtype': 'bfloat16', 'matmul_flops': rate,
            'jax': {k.replace('_', '@'): {'step_s': v} for k, v in steps.items()}}
  merged = steptime.merge_results([
      call(1.0, adamix=2.0, adapter=1.0),
      call(2.0, adapter=4.0, adamix_fused=8.0, adapter_fused=2.0)])
  assert merged['jax']['adapter']['call'] == 1
  assert merged['jax']['adapter [call 2]']['matmul_flops'] == 2.0
  ratios = {(n, d): r for n, d, r, _ in steptime.step_ratios(merged['jax'])}
  assert ratios == {('adamix', 'adapter'): 2.0, ('adamix@fused', 'adapter@fused'): 4.0}


def test_gpu_table_gives_mfu_against_each_rows_matmul_and_the_peers_against_ours():
  row = {'trainable': 1000, 'flops': 2e12, 'peak_gib': 3.0, 'compile_s': 10.0}
  result = {'device': 'gpu: X', 'machine': 'Machine: M.', 'shape': 'roberta-large',
            'batch': 64, 'length': 128, 'dtype': 'bfloat16', 'steps': 20, 'repeats': 3,
            'matmul_flops': 1e13,
            'jax': {'adapter': dict(row, step_s=0.5), 'adamix': dict(row, step_s=0.5),
                    'lora': dict(row, step_s=1.0)},
            'torch': {'lora': {'step_s': 2.0, 'trainable': 10, 'attention': 'sdpa'},
                      'full': {'error': 'OutOfMemoryError: no'}}}
  lines = steptime.render_gpu(result).splitlines()
  assert '| ours: adapter | 1,000 | 500.0 | 2.00 | 4 | 40% | MISS | 3.0 | 10 |' in lines
  assert '| ours: lora | 1,000 | 1000.0 | 2.00 | 2 | 20% | MISS | 3.0 | 10 |' in lines
  assert '| torch+PEFT lora (sdpa) | 10 | 2000.0 | 2.00 (ours) | 1 | 10% |  |  |  |' in lines
  assert 'adamix step / adapter step: 1.000 (target ≤ 1.05: PASS)' in lines
  assert 'torch lora step / our lora step: 2.00x' in lines
  assert 'torch full peer failed: OutOfMemoryError: no' in lines


def test_gpu_and_speed_commands_parse_their_flags_and_refuse_unknown_variants():
  for module, flag in (('gpu_step', '--variants=adapter,adaptor@fused'),
                       ('speed', '--variants=adaptor')):
    run = subprocess.run([sys.executable, '-m', f'benchmarks.{module}', flag], cwd=ROOT,
                         timeout=300, capture_output=True, text=True)
    assert run.returncode == 1 and 'adaptor' in run.stderr, (module, run.stderr)


def _fake_run(root: Path, method: str, seed: int, evals: dict[int, float],
              eval_mode: str = 'merged') -> None:
  folder = root / 'mrpc' / method / f'seed_{seed}'
  folder.mkdir(parents=True)
  (folder / 'results.json').write_text(json.dumps(
      {'task': 'mrpc', 'method': method, 'seed': seed, 'eval_mode': eval_mode,
       'selection_metric': 'accuracy'}))
  lines = [{'step': 50, 'train/loss': 0.6}]
  lines += [{'step': s, 'eval/accuracy': v, 'eval/f1': 0.0} for s, v in evals.items()]
  (folder / 'metrics.jsonl').write_text(''.join(json.dumps(x) + '\n' for x in lines))


def test_dev_curve_table_averages_each_evaluation_step_over_seeds(tmp_path):
  _fake_run(tmp_path, 'adapter', 1, {114: 0.70, 228: 0.74})
  _fake_run(tmp_path, 'adapter', 2, {114: 0.72, 228: 0.76})
  _fake_run(tmp_path, 'adamix', 1, {114: 0.69, 228: 0.71})
  _fake_run(tmp_path, 'adamix', 2, {114: 0.10, 228: 0.10}, eval_mode='random')  # not a curve
  text = quality.dev_curve_tables(tmp_path)
  lines = text.splitlines()
  assert lines[0].startswith('Dev curve, MRPC')
  assert '| method | seeds | 114 | 228 |' in lines
  assert '| adapter | 2 | 71.0±1.4 | 75.0±1.4 |' in lines
  assert '| adamix | 1 | 69.0 | 71.0 |' in lines


def test_dev_curve_table_skips_single_evaluations_and_names_a_bad_line(tmp_path):
  _fake_run(tmp_path, 'adapter', 1, {100: 0.70})
  assert quality.dev_curve_tables(tmp_path) == ''
  log = tmp_path / 'mrpc' / 'adapter' / 'seed_1' / 'metrics.jsonl'
  log.write_text(log.read_text() + '{"step": 1\n')
  with pytest.raises(ValueError, match=r'metrics\.jsonl:3: not a JSON line'):
    quality.dev_curves(tmp_path)


def test_speed_compile_only_reports_memory_without_running(tmp_path):
  # The two-layer `tiny` shape, compiled at LLVM's -O0 (conftest): XLA's memory and FLOP
  # analyses (made before code generation) are the same, in half the compile time.
  env = dict(os.environ)
  out = subprocess.run(
      [sys.executable, '-m', 'benchmarks.speed', '--shapes=tiny', '--lengths=16', '--batch=2',
       '--variants=adapter,full', '--remat=full', '--compile_only', '--write=false',
       f'--json_dir={tmp_path}'],
      cwd=ROOT, env=env, check=True, timeout=300, capture_output=True, text=True).stdout
  result = json.loads((tmp_path / 'tiny_L16_compiled.json').read_text())
  assert result['compile_only'] and 'samples' not in result
  assert set(result['info']) == {'adapter @remat=full', 'full @remat=full'}  # no peers
  for row in result['info'].values():
    assert row['step_bytes'] > row['fwd_bytes'] > 0 and row['step_flops'] > row['fwd_flops'] > 0
    assert row['eval_bytes'] > 0 and row['eval_flops'] > 0
  adapter, full = result['info']['adapter @remat=full'], result['info']['full @remat=full']
  # Full fine-tuning's step holds the whole model's gradients and Adam state.
  assert full['step_bytes'] > 2 * adapter['step_bytes']
  # The adapter's step takes no weight gradient of a frozen kernel (counted in its jaxpr).
  assert adapter['frozen_kernel_shaped_dots'] == 0
  assert 'compiled, not run' in out and '| adapter @remat=full | ' in out
  assert 'round' not in out  # nothing timed


def test_remat_step_recomputes_the_forward_and_takes_no_frozen_weight_gradient():
  config = steptime.SHAPES['tiny']
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype)
           for k, v in steptime.make_batch(config, 2, 16).items()}
  key = jax.random.PRNGKey(0)
  fwd_flops, step_flops = {}, {}
  for remat in ('none', 'full'):
    built = steptime.build(dataclasses.replace(steptime.VARIANTS['adapter'], remat=remat),
                           config, None)  # shapes only: traced and lowered, not compiled
    step = steptime.compile_step(built, batch, abstract=True)
    fwd = jax.jit(functools.partial(steptime.forward_loss, model=built.model,
                                    consistency_weight=0.0)
                  ).trace(built.trainable, built.frozen, batch, key)
    fwd_flops[remat] = diagnostics.flops(fwd.lower())
    step_flops[remat] = diagnostics.flops(step.lowered)
    assert diagnostics.frozen_grad_dots(step.traced, fwd, built.frozen, built.trainable) == 0
  # Same forward; the remat step runs every layer's forward again.
  assert fwd_flops['full'] == fwd_flops['none'] > 0
  assert step_flops['full'] > 1.2 * step_flops['none']


def test_speed_table_gives_times_ratios_and_quiet_rounds():
  samples = {'matmul': [1.0, 2.0, 1.1], 'adapter/fwd': [0.1, 0.2, 0.1],
             'adapter/step': [0.3, 0.6, 0.3], 'adamix/step': [0.3, 0.9, 0.3],
             'lora/step': [0.2, 0.4, 0.2], 'torch+PEFT lora/step': [0.5, 0.5, 0.5]}
  analysed = {'fwd_flops': 1e9, 'step_flops': 3e9, 'step_bytes': 2**21, 'fwd_dots': 5,
              'step_dots': 9, 'frozen_kernel_shaped_dots': 0}
  result = {'shape': 'tiny', 'origin': 'random weights', 'batch': 2, 'length': 16,
            'machine': 'Machine: M.', 'peak_rss_gib': 1.0, 'load': [0.5, 2.5],
            'prng_impl': 'threefry2x32', 'samples': samples,
            'info': {'adapter': dict(analysed, trainable=8500, method='adapter'),
                     'adamix': {'trainable': 9000, 'method': 'adamix'},
                     'lora': dict(analysed, trainable=8000, method='lora'),
                     'torch+PEFT lora': {'trainable': 7000, 'method': 'torch+PEFT lora'}}}
  text, ratios = steptime.render_cpu(result, 'speed/tiny/L16')
  lines = text.splitlines()
  assert lines[0] == '### `speed/tiny/L16`: tiny (random weights), batch 2, length 16'
  assert 'the 2 rounds whose matmul ran within 1.25x of its fastest' in text  # rounds 1, 3
  assert '| adapter | 8.5K | 100 | 300 | - | 100 / 300 | 3.00 / 3.00 | 1 / 3 | ' in text
  # The peer's GFLOP/s: our LoRA step's FLOPs over the peer's time.
  assert '| torch+PEFT lora | 7.0K | - | 500 | - | - / 500 | - | - | 6 (' in text
  by_label = {r['ratio']: r for r in ratios}
  assert by_label['AdaMix step (routing, no consistency) / adapter step']['value'] == 1.0
  assert by_label['torch+PEFT LoRA step / our LoRA step (speed-up)']['verdict'] == 'PASS'
  assert not any('eval' in label for label in by_label)  # no eval timed


def test_speed_ratios_repeat_between_remat_rows():
  info = {'adapter': {}, 'adamix+consistency': {}, 'adapter @remat=full': {},
          'adamix+consistency @remat=full': {}}
  ratios = {label: (num, den, target) for label, num, den, target, _ in steptime.ratios_of(info)}
  assert ratios['AdaMix+consistency step / adapter step (both remat=full)'] == (
      'adamix+consistency @remat=full/step', 'adapter @remat=full/step', 2.1)
  assert ratios['adapter @remat=full step / adapter step'] == (
      'adapter @remat=full/step', 'adapter/step', None)
  assert not any('remat=dots' in label for label in ratios)
  # A PyTorch peer with gradient checkpointing is compared with our remat row.
  assert ratios['torch full-FT step / our full-FT step (speed-up) (both remat=full)'][:2] == (
      'torch full @remat=full/step', 'full @remat=full/step')
  assert steptime.torch_peer_of('torch full @remat=full') == 'full @remat=full'
  assert steptime.torch_peer_of('torch+PEFT lora') == 'lora'
  assert steptime.torch_peer_of('adapter @remat=full') is None


def test_torch_peers_with_remat_recompute_every_layer_in_the_backward_pass(monkeypatch):
  # Gradient checkpointing runs each layer's forward again during the backward pass:
  # the MiniLM peers' 6 layers (their feed-forward block, counted) run 6 times per step
  # without it, 12 times with it.
  from transformers.models.bert import modeling_bert  # pylint: disable=import-outside-toplevel
  calls = collections.Counter()
  current = ''
  # Inside the layer: transformers wraps the layer's own forward to checkpoint it.
  forward = modeling_bert.BertIntermediate.forward

  def counted(self, *args, **kwargs):
    calls[current] += 1
    return forward(self, *args, **kwargs)

  monkeypatch.setattr(modeling_bert.BertIntermediate, 'forward', counted)
  config = steptime.SHAPES['tiny']  # unused: MiniLM's peers load its checkpoint
  batch = steptime.make_batch(config, 2, 8)
  peers = steptime.torch_peers('minilm', config, batch, ['lora', 'full'],
                               ['none', 'full', 'dots'])
  assert set(peers) == {'torch+PEFT lora', 'torch full', 'torch+PEFT lora @remat=full',
                        'torch full @remat=full'}, set(peers)
  for current, peer in peers.items():
    peer.runner.sync(peer.runner.call())
    assert peer.trainable > 0 and peer.device == 'cpu'
  assert calls == {'torch+PEFT lora': 6, 'torch full': 6, 'torch+PEFT lora @remat=full': 12,
                   'torch full @remat=full': 12}, calls
  assert peers['torch+PEFT lora'].trainable < peers['torch full'].trainable


def test_frozen_grad_dots_counts_weight_gradients_of_frozen_kernels_only():
  # batch * length = 8 = a kernel dimension: flattened activations would share the
  # frozen kernel's [8, 16] shape; the jaxpr keeps [2, 4, 16].
  x = jnp.ones((2, 4, 8))
  frozen = {'dense': {'kernel': jnp.ones((8, 16))}}
  trainable = {'out': {'kernel': jnp.ones((16, 3))}}

  def loss(t, f):
    return jnp.sum(jax.nn.gelu(x @ f['dense']['kernel']) @ t['out']['kernel'])

  def good_step(t, f):  # gradients of the trainable kernel only
    return jax.grad(loss)(t, f)

  def bad_step(t, f):  # also the frozen kernel's weight gradient
    return jax.grad(loss, argnums=(0, 1))(t, f)

  trace = lambda fn: jax.jit(fn).trace(trainable, frozen)
  fwd = trace(loss)
  assert diagnostics.frozen_grad_dots(trace(good_step), fwd, frozen, trainable) == 0
  assert diagnostics.frozen_grad_dots(trace(bad_step), fwd, frozen, trainable) == 1
  # Nested jaxprs (jit inside the step) are searched too.
  assert diagnostics.frozen_grad_dots(trace(jax.jit(bad_step)), fwd, frozen, trainable) == 1
  assert diagnostics.kernel_shapes(frozen) == {(8, 16)}


def _fake_result(root: Path, method: str, seed: int, best: float, curve: dict[int, float],
                 random: bool = False) -> None:
  folder = root / 'mrpc' / ('adamix_random' if random else method) / f'seed_{seed}'
  folder.mkdir(parents=True)
  (folder / 'results.json').write_text(json.dumps(
      {'task': 'mrpc', 'method': method, 'seed': seed,
       'eval_mode': 'random' if random else 'merged', 'selection_metric': 'accuracy',
       'best': {'step': 228, 'metrics': {'accuracy': best}},
       'final': {'step': 228, 'metrics': {'accuracy': best}}}))
  if not random:
    (folder / 'metrics.jsonl').write_text(''.join(
        json.dumps({'step': s, 'eval/accuracy': v}) + '\n' for s, v in curve.items()))


def test_paired_table_gives_each_seeds_difference_and_their_mean_and_std(tmp_path):
  _fake_result(tmp_path, 'adapter', 1, 0.75, {114: 0.70, 228: 0.75})
  _fake_result(tmp_path, 'adapter', 2, 0.78, {114: 0.72, 228: 0.78})
  _fake_result(tmp_path, 'adamix', 1, 0.74, {114: 0.69, 228: 0.74})
  _fake_result(tmp_path, 'adamix', 2, 0.80, {114: 0.71, 228: 0.80})
  _fake_result(tmp_path, 'adamix', 1, 0.72, {}, random=True)
  _fake_result(tmp_path, 'adamix', 2, 0.79, {}, random=True)
  _fake_result(tmp_path, 'adamix', 3, 0.90, {114: 0.9, 228: 0.9})  # no adapter seed 3
  lines = quality.paired_tables(tmp_path).splitlines()
  assert lines[0].startswith('Paired by seed, MRPC')
  assert ('| seed | adapter | adamix | adamix − adapter | adamix [random] | '
          'adamix [random] − adapter |') in lines
  assert '| 1 | 75.0 | 74.0 | -1.0 | 72.0 | -3.0 |' in lines
  assert '| 2 | 78.0 | 80.0 | +2.0 | 79.0 | +1.0 |' in lines
  # Differences -1, +2: mean +0.5, sample std 2.1; -3, +1: mean -1.0, std 2.8.
  assert '| mean ± std |  |  | +0.5 ± 2.1 |  | -1.0 ± 2.8 |' in lines
  assert not any(line.startswith('| 3 |') for line in lines)
  curves = quality.run_curve_tables(tmp_path).splitlines()
  assert '| adamix | 2 | 71.0 | 80.0 |' in curves
  assert '| adapter | 1 | 70.0 | 75.0 |' in curves


def test_sections_go_to_the_notes_file_of_their_kind_and_replace_only_themselves(
    tmp_path, monkeypatch):
  monkeypatch.setattr(common, 'NOTES', tmp_path)
  assert common.update_section('quality/a', 'first') == tmp_path / 'quality.md'
  common.update_section('quality/b', 'second')
  common.update_section('speed/x', 'other kind')
  common.update_section('quality/a', 'replaced')
  text = (tmp_path / 'quality.md').read_text()
  assert 'replaced' in text and 'first' not in text
  assert text.index('quality/a') < text.index('quality/b')  # kept in place
  assert 'other kind' in (tmp_path / 'speed.md').read_text()
  with pytest.raises(ValueError, match=r"section '\.\./x'"):
    common.notes_path('../x')


def test_quality_numbers_and_figures_outlive_the_runs(tmp_path, monkeypatch):
  root, out = tmp_path / 'runs', tmp_path / 'out'
  monkeypatch.setattr(common, 'NUMBERS', out / 'results')
  monkeypatch.setattr(common, 'FIGURES', out / 'figures')
  _fake_result(root, 'adapter', 1, 0.75, {114: 0.70, 228: 0.75})
  _fake_result(root, 'adapter', 2, 0.78, {114: 0.72, 228: 0.78})
  _fake_result(root, 'adamix', 1, 0.74, {114: 0.69, 228: 0.74})
  _fake_result(root, 'adamix', 1, 0.72, {}, random=True)
  path = quality.save_numbers(root, {'epochs': 2}, 'quality/mrpc-2')
  assert path == out / 'results' / 'quality-mrpc-2.json'
  saved = json.loads(path.read_text())
  runs = {r['run']: r for r in saved['runs']}
  assert runs['mrpc/adapter/seed_2']['dev_curve'] == {'114': 0.72, '228': 0.78}
  assert runs['mrpc/adamix_random/seed_1']['results']['eval_mode'] == 'random'
  assert saved['plan'] == {'epochs': 2}
  curves = {task: {m: {s: [100 * v for v in vs] for s, vs in steps.items()}
                   for m, steps in methods.items()}
            for task, methods in quality.dev_curves(root).items()}
  png = report.plot_curves(curves, tmp_path / 'curves.png')
  assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  with pytest.raises(ValueError, match='no dev curve'):
    report.plot_curves({}, tmp_path / 'none.png')


def test_saved_numbers_restore_into_a_new_root_and_give_the_same_tables(tmp_path,
                                                                        monkeypatch):
  root, again = tmp_path / 'runs', tmp_path / 'again'
  monkeypatch.setattr(common, 'NUMBERS', tmp_path / 'results')
  _fake_result(root, 'adapter', 1, 0.75, {114: 0.70, 228: 0.75})
  _fake_result(root, 'adamix', 1, 0.74, {114: 0.69, 228: 0.74})
  _fake_result(root, 'adamix', 1, 0.72, {}, random=True)
  plan = {'epochs': 2}
  (root / 'quality_plan.json').write_text(json.dumps(plan))
  numbers = quality.save_numbers(root, plan, 'quality/mrpc-2')
  _fake_result(again, 'adapter', 2, 0.78, {114: 0.72, 228: 0.78})  # a new seed, kept
  restored = quality.restore_numbers(numbers, again)
  assert sorted(p.relative_to(again).as_posix() for p in restored) == [
      'mrpc/adamix/seed_1', 'mrpc/adamix_random/seed_1', 'mrpc/adapter/seed_1']
  assert quality.dev_curves(again)['mrpc']['adamix'] == quality.dev_curves(root)['mrpc']['adamix']
  assert quality.seed_scores(again)[('mrpc', 'adapter')] == {1: 75.0, 2: 78.0}
  assert quality.seed_scores(again)[('mrpc', 'adamix [random]')] == {1: 72.0}
  assert quality.restore_numbers(numbers, again) == []  # nothing overwritten
  # The restored runs name the machine that trained them; the new seed does not.
  saved_machine = json.loads(numbers.read_text())['machine'].removeprefix('Machine: ')
  assert quality.provenance(again) == (
      'Trained elsewhere (`mrpc/adamix/seed_1`, `mrpc/adamix_random/seed_1`, '
      f'`mrpc/adapter/seed_1`): {saved_machine}\n\n')
  assert quality.provenance(root) == ''
  (again / 'quality_plan.json').write_text(json.dumps({'epochs': 20}))
  with pytest.raises(app.UsageError, match='another budget'):
    quality.restore_numbers(numbers, again)
  (tmp_path / 'bad.json').write_text('{"runs": []}')
  with pytest.raises(cli.InputError, match=r'bad\.json'):
    quality.restore_numbers(tmp_path / 'bad.json', again)
