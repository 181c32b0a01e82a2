"""Benchmark scripts' pure parts (the benchmarks themselves are not tests)."""

from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys
import textwrap

import pytest
from absl import app

from adamix_jax import report
from benchmarks import common, quality
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


def _run_isolated(code: str):
  # gpu_step and quality both define absl flags (e.g. --steps): one process each.
  subprocess.run([sys.executable, '-c', textwrap.dedent(code)], cwd=ROOT, check=True,
                 timeout=300)


def test_gpu_step_variant_ablations_parse_and_reject_unknown_names():
  _run_isolated(r"""
      import pytest
      from benchmarks import gpu_step
      assert gpu_step.parse_variant('adamix+consistency') == ('adamix', 1.0, frozenset())
      assert gpu_step.parse_variant('adapter@fused@rbg') == (
          'adapter', 0.0, frozenset({'fused', 'rbg'}))
      with pytest.raises(ValueError, match="Unknown variant 'adaptor'"):
        gpu_step.parse_variant('adaptor@fused')
      with pytest.raises(ValueError, match=r"Unknown ablation\(s\) \['flash'\]"):
        gpu_step.parse_variant('adapter@flash')
      with pytest.raises(ValueError, match='choose one of remat, remat_dots'):
        gpu_step.parse_variant('adapter@remat@remat_dots')
      """)


def test_gpu_step_prng_ablation_changes_the_key_only_while_tracing():
  _run_isolated("""
      import jax
      from benchmarks import gpu_step
      before = jax.config.jax_default_prng_impl
      with gpu_step.prng_impl(frozenset({'rbg'})):
        assert jax.random.PRNGKey(0).shape == (4,)  # rbg keys: 4 words (threefry: 2)
      assert jax.config.jax_default_prng_impl == before
      assert jax.random.PRNGKey(0).shape == (2,)
      """)


def test_gpu_step_merge_keeps_each_call_and_prefers_same_call_ratios():
  _run_isolated("""
      from benchmarks import gpu_step
      def call(rate, **steps):
        return {'device': 'gpu: X', 'shape': 'roberta-large', 'batch': 64, 'length': 128,
                'dtype': 'bfloat16', 'matmul_flops': rate,
                'jax': {k.replace('_', '@'): {'step_s': v} for k, v in steps.items()}}
      merged = gpu_step.merge_results([
          call(1.0, adamix=2.0, adapter=1.0),
          call(2.0, adapter=4.0, adamix_fused=8.0, adapter_fused=2.0)])
      assert merged['jax']['adapter']['call'] == 1
      assert merged['jax']['adapter [call 2]']['matmul_flops'] == 2.0
      ratios = {(n, d): r for n, d, r, _ in gpu_step.step_ratios(merged['jax'])}
      assert ratios == {('adamix', 'adapter'): 2.0, ('adamix@fused', 'adapter@fused'): 4.0}
      """)


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
  out = subprocess.run(
      [sys.executable, '-m', 'benchmarks.speed', '--shapes=minilm', '--lengths=16', '--batch=2',
       '--variants=adapter,full', '--remat=none,full', '--compile_only', '--write=false',
       f'--json_dir={tmp_path}'],
      cwd=ROOT, check=True, timeout=600, capture_output=True, text=True).stdout
  result = json.loads((tmp_path / 'minilm_L16_compiled.json').read_text())
  assert result['compile_only'] and 'samples' not in result
  assert set(result['info']) == {'adapter', 'full', 'adapter @remat=full', 'full @remat=full'}
  # A remat row recomputes the forward in its step: same forward, more step FLOPs.
  plain, remat = result['info']['adapter'], result['info']['adapter @remat=full']
  assert remat['fwd_flops'] == plain['fwd_flops']
  assert remat['step_flops'] > 1.2 * plain['step_flops']
  for row in result['info'].values():
    assert row['step_bytes'] > row['fwd_bytes'] > 0 and row['step_flops'] > row['fwd_flops'] > 0
  # Full fine-tuning's step holds the whole model's gradients and Adam state.
  assert result['info']['full']['step_bytes'] > 2 * result['info']['adapter']['step_bytes']
  # The adapter's step takes no weight gradient of a frozen kernel (counted in its jaxpr).
  assert result['info']['adapter']['frozen_kernel_shaped_dots'] == 0
  assert result['info']['adapter @remat=full']['frozen_kernel_shaped_dots'] == 0
  assert 'compiled, not run' in out and '| adapter | ' in out


def test_speed_ratios_repeat_between_remat_rows():
  _run_isolated(r"""
      from benchmarks import speed
      info = {'adapter': {}, 'adamix+consistency': {}, 'adapter @remat=full': {},
              'adamix+consistency @remat=full': {}}
      ratios = {label: (num, den, target) for label, num, den, target, _ in speed._ratios(info)}
      assert ratios['AdaMix+consistency step / adapter step (both remat=full)'] == (
          'adamix+consistency @remat=full/step', 'adapter @remat=full/step', 2.1)
      assert ratios['adapter @remat=full step / adapter step'] == (
          'adapter @remat=full/step', 'adapter/step', None)
      assert not any('remat=dots' in label for label in ratios)
      # A PyTorch peer with gradient checkpointing is compared with our remat row.
      assert ratios['torch full-FT step / our full-FT step (speed-up) (both remat=full)'][:2] == (
          'torch full @remat=full/step', 'full @remat=full/step')
      assert speed.torch_peer_of('torch full @remat=full') == 'full @remat=full'
      assert speed.torch_peer_of('torch+PEFT lora') == 'lora'
      assert speed.torch_peer_of('adapter @remat=full') is None
  """)


def test_torch_peers_with_remat_recompute_every_layer_in_the_backward_pass():
  # Gradient checkpointing runs each layer's forward again during the backward pass:
  # the MiniLM peers' 6 layers (their feed-forward block, counted) run 6 times per step
  # without it, 12 times with it.
  _run_isolated(r"""
      import collections
      from transformers.models.bert import modeling_bert
      from benchmarks import speed
      calls = collections.Counter()
      # Inside the layer: transformers wraps the layer's own forward to checkpoint it.
      forward = modeling_bert.BertIntermediate.forward
      def counted(self, *args, **kwargs):
        calls[current] += 1
        return forward(self, *args, **kwargs)
      modeling_bert.BertIntermediate.forward = counted
      config, _, _ = speed.backbone('minilm')
      batch = speed.make_batch(config, 2, 8)
      steps = speed.torch_steps('minilm', config, batch, ['lora', 'full'], ['none', 'full', 'dots'])
      assert set(steps) == {'torch+PEFT lora', 'torch full', 'torch+PEFT lora @remat=full',
                            'torch full @remat=full'}, set(steps)
      for current, (step, count) in steps.items():
        step()
        assert count > 0
      assert calls == {'torch+PEFT lora': 6, 'torch full': 6, 'torch+PEFT lora @remat=full': 12,
                       'torch full @remat=full': 12}, calls
      """)


def test_frozen_grad_dots_counts_weight_gradients_of_frozen_kernels_only():
  _run_isolated(r"""
      import jax
      import jax.numpy as jnp
      from benchmarks import speed
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
      assert speed.frozen_grad_dots(trace(good_step), fwd, frozen, trainable) == 0
      assert speed.frozen_grad_dots(trace(bad_step), fwd, frozen, trainable) == 1
      # Nested jaxprs (jit inside the step) are searched too.
      assert speed.frozen_grad_dots(trace(jax.jit(bad_step)), fwd, frozen, trainable) == 1
      """)


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
  (again / 'quality_plan.json').write_text(json.dumps({'epochs': 20}))
  with pytest.raises(app.UsageError, match='another budget'):
    quality.restore_numbers(numbers, again)
  (tmp_path / 'bad.json').write_text('{"runs": []}')
  with pytest.raises(cli.InputError, match=r'bad\.json'):
    quality.restore_numbers(tmp_path / 'bad.json', again)
