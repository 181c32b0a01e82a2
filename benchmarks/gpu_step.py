"""AdaMix training step on one GPU: step time, MFU, and the PyTorch + PEFT peer.

  bash benchmarks/gpu.sh            # on a lent H100/H200 (see gpu.sh)
  python -m benchmarks.gpu_step --smoke   # tiny shapes, any CPU: checks the script runs

RoBERTa-large shape (random weights), bfloat16 compute (float32 parameters, LayerNorm and
softmax, as `config.model.dtype='bfloat16'`), batch 64, length 128. Per variant the step
is `train.train_step` jitted with the state donated, as `train_and_evaluate` runs it:
- adamix+consistency: AdaMix as the paper trains it (4 experts, shared up projection,
  two routed passes, consistency weight 1);
- adamix: one routed pass; adapter: the plain adapter of the same size; lora: rank 8 on
  query/value; full: full fine-tuning.
Ablations of a variant (suffixes, combinable: `adapter@fused@rbg`): `@fused` fused attention
(`config.model.attention='fused'`: cuDNN flash attention, no attention-probability
dropout); `@nodrop` every dropout rate 0; `@rbg` / `@unsafe_rbg` dropout masks and routing
from that PRNG (`jax_default_prng_impl`) instead of threefry; `@remat` / `@remat_dots` the
encoder rematerialised (`config.model.remat` full / dots: less memory; the FLOPs and MFU
then count the recomputation too).
Time per step: `--steps` steps dispatched back to back, then one `block_until_ready`,
divided by the count; the median of `--repeats` such measurements.
MFU = (FLOPs of the step / time) / (the measured bf16 matmul rate, 8192^3, same process).
FLOPs: XLA's cost analysis of the lowered (unoptimised) step, where every dot is still a
dot (the optimised GPU program calls cuBLAS custom calls that cost analysis does not count).
The peer: transformers `AutoModelForSequenceClassification` + PEFT LoRA (r=8, alpha 16,
query+value), bf16 autocast over float32 weights, fused AdamW, default (sdpa) attention,
eager mode, same batch.

Writes gpu_step.json and gpu_step.md to $OUT when set (else to --out_dir).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from experiments import cli

FLAGS = flags.FLAGS
flags.DEFINE_boolean('smoke', False, 'Tiny shapes and few steps: checks the script on CPU.')
flags.DEFINE_integer('batch', 64, 'Batch size.')
flags.DEFINE_integer('length', 128, 'Sequence length.')
flags.DEFINE_integer('steps', 20, 'Steps per measurement.')
flags.DEFINE_integer('repeats', 3, 'Measurements (median).')
flags.DEFINE_list('variants', ['adamix+consistency', 'adamix', 'adapter', 'lora', 'full'],
                  'Variants to time.')
flags.DEFINE_list('torch', ['lora', 'full'],
                  'PyTorch peers to time: lora (PEFT, rank 8, query+value) and/or full '
                  '(full fine-tuning); empty for none.')
flags.DEFINE_string('dtype', 'bfloat16', 'Compute dtype.')
flags.DEFINE_string('out_dir', '', 'Where results go when $OUT is not set.')
flags.DEFINE_list('render', [], 'Render these gpu_step.json files (fetched from the device; '
                  'several calls on one machine are merged, each variant keeping its '
                  "call's matmul rate) into benchmarks/notes/gpu.md (section gpu); "
                  'FLOP counts the device did not report are counted here by lowering the '
                  'same step on this backend. Runs nothing else.')
MFU_GOAL = 0.45


def _import_train():
  from adamix_jax import train  # pylint: disable=import-outside-toplevel
  return train


def shape_config():
  from adamix_jax.encoder import EncoderConfig  # pylint: disable=import-outside-toplevel
  large = EncoderConfig(model_type='roberta', vocab_size=50265, hidden_size=1024,
                        num_hidden_layers=24, num_attention_heads=16,
                        intermediate_size=4096, max_position_embeddings=514,
                        type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1)
  if FLAGS.smoke:
    return dataclasses.replace(large, vocab_size=1000, hidden_size=64, num_hidden_layers=2,
                               num_attention_heads=4, intermediate_size=128)
  return large


ABLATIONS = ('fused', 'nodrop', 'rbg', 'unsafe_rbg', 'remat', 'remat_dots')


def parse_variant(name: str) -> tuple[str, float, frozenset[str]]:
  """`base@ablation@...` -> (method, consistency weight, ablations)."""
  base, *ablations = name.split('@')
  methods = {'adamix+consistency': ('adamix', 1.0), 'adamix': ('adamix', 0.0),
             'adapter': ('adapter', 0.0), 'lora': ('lora', 0.0), 'full': ('full', 0.0)}
  if base not in methods:
    raise ValueError(f'Unknown variant {base!r} in {name!r}; supported: {", ".join(methods)}')
  unknown = set(ablations) - set(ABLATIONS)
  if unknown:
    raise ValueError(f'Unknown ablation(s) {sorted(unknown)} in {name!r}; supported: '
                     f'{", ".join(ABLATIONS)}')
  for exclusive in (('rbg', 'unsafe_rbg'), ('remat', 'remat_dots')):
    if set(exclusive) <= set(ablations):
      raise ValueError(f'{name!r}: choose one of {", ".join(exclusive)}')
  return (*methods[base], frozenset(ablations))


@contextlib.contextmanager
def prng_impl(ablations: frozenset[str]):
  """The PRNG implementation an ablation asks for, while the step is traced."""
  impl = next((a for a in ('rbg', 'unsafe_rbg') if a in ablations), None)
  if impl is None:
    yield
    return
  before = jax.config.jax_default_prng_impl
  jax.config.update('jax_default_prng_impl', impl)
  try:
    yield
  finally:
    jax.config.update('jax_default_prng_impl', before)


def time_steps(run_step: Callable[[], Any], sync: Callable[[Any], None], steps: int,
               repeats: int) -> list[float]:
  """Seconds per step: `steps` dispatched back to back then synced, `repeats` times."""
  sync(run_step())  # warm-up (compilation happened ahead of time)
  out = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      result = run_step()
    sync(result)
    out.append((time.perf_counter() - start) / steps)
  return out


def matmul_rate(dtype) -> float:
  """FLOP/s of an n^3 matmul in `dtype` (n = 8192; 512 with --smoke), median of 10."""
  n = 512 if FLAGS.smoke else 8192
  a = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype)
  b = jax.random.normal(jax.random.PRNGKey(2), (n, n), dtype)
  mm = jax.jit(jnp.matmul).lower(a, b).compile()
  seconds = time_steps(lambda: mm(a, b), jax.block_until_ready, 10, 5)
  return 2 * n**3 / statistics.median(seconds)


def lowered_flops(lowered) -> float:
  cost = lowered.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost.get('flops', float('nan'))) if cost else float('nan')


def lower_step(name: str, batch: Any, abstract: bool = False):
  """The jitted training step of variant `name`, lowered for `batch`.

  Returns (lowered, state, frozen, trainable parameter count); with `abstract` the
  parameters are shapes only (for FLOP counts on another machine than the timing).
  """
  train = _import_train()
  from adamix_jax import methods, optim  # pylint: disable=import-outside-toplevel
  from adamix_jax.model import Model, init_params  # pylint: disable=import-outside-toplevel
  from configs import default, presets  # pylint: disable=import-outside-toplevel

  method, weight, ablations = parse_variant(name)
  run_config = presets.method_preset(default.get_config(), method)
  run_config.consistency_weight = weight
  fields = dict(run_config.adapter)
  fields['lora_targets'] = tuple(fields['lora_targets'])
  adaptation = methods.adaptation_for(method, **fields)
  encoder_config = shape_config()
  if 'nodrop' in ablations:
    encoder_config = dataclasses.replace(encoder_config, hidden_dropout_prob=0.0,
                                         attention_probs_dropout_prob=0.0,
                                         classifier_dropout=0.0)
  model = Model(encoder_config, adaptation, num_labels=2, dtype=jnp.dtype(FLAGS.dtype),
                attention='fused' if 'fused' in ablations else 'standard',
                remat=('full' if 'remat' in ablations else
                       'dots' if 'remat_dots' in ablations else 'none'))
  init = functools.partial(init_params, model, jax.random.PRNGKey(0))  # same backbone for all
  params = jax.eval_shape(init) if abstract else init()
  trainable, frozen = methods.partition(params, methods.trainable_mask(params, method))
  tx, schedule = optim.make_optimizer(run_config, 1000, adaptation, trainable)
  with prng_impl(ablations):
    make_state = lambda p: train.create_train_state(p, tx, seed=2)
    state = jax.eval_shape(make_state, trainable) if abstract else make_state(trainable)
    lowered = jax.jit(functools.partial(
        train.train_step, model=model, tx=tx, schedule=schedule, consistency_weight=weight,
        regression=False), donate_argnums=(0,)).lower(state, frozen, batch)
  count = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(trainable))
  return lowered, state, frozen, count


def jax_variants(batch_np: dict[str, np.ndarray], out: dict[str, dict[str, Any]],
                 matmul_flops: float, on_result: Callable[[], None] = lambda: None) -> dict[str, dict[str, Any]]:
  """Times each variant's training step; fills `out` and calls `on_result` after each."""
  batch = jax.device_put(batch_np)
  for name in FLAGS.variants:
    lowered, state, frozen, trainable = lower_step(name, batch)
    start = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    box = [state]

    def run_step(compiled=compiled, box=box, frozen=frozen):
      box[0], metrics = compiled(box[0], frozen, batch)
      return metrics

    seconds = time_steps(run_step, jax.block_until_ready, FLAGS.steps, FLAGS.repeats)
    memory = compiled.memory_analysis()
    out[name] = {
        'step_s': statistics.median(seconds), 'samples': seconds, 'compile_s': compile_s,
        'flops': lowered_flops(lowered),
        'trainable': trainable, 'matmul_flops': matmul_flops,
        'peak_gib': (memory.argument_size_in_bytes + memory.temp_size_in_bytes +
                     memory.output_size_in_bytes - memory.alias_size_in_bytes) / 2**30
        if memory else float('nan')}
    print(f"  {name}: {1e3 * out[name]['step_s']:.1f} ms/step, "
          f"{out[name]['flops'] / 1e12:.2f} TFLOP/step (compiled in {compile_s:.0f} s)",
          flush=True)
    del box, state, compiled
    on_result()
  return out


def torch_step(batch_np: dict[str, np.ndarray], kind: str) -> dict[str, Any]:
  """The PyTorch peer's training step: transformers + PEFT LoRA, or full fine-tuning."""
  import peft  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  if device == 'cpu':
    torch.set_num_threads(common.num_cores())
  hf = shape_config().to_hf_dict()
  hf_config = transformers.AutoConfig.for_model(hf.pop('model_type'), **hf, num_labels=2)
  torch.manual_seed(0)
  model = transformers.AutoModelForSequenceClassification.from_config(hf_config)
  if kind == 'lora':
    model = peft.get_peft_model(model, peft.LoraConfig(
        task_type=peft.TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.0,
        target_modules=['query', 'value']))
  elif kind != 'full':
    raise ValueError(f'Unknown torch peer {kind!r}; supported: lora, full')
  model = model.to(device)
  model.train()
  params = [p for p in model.parameters() if p.requires_grad]
  opt = torch.optim.AdamW(params, lr=4e-4, weight_decay=0.1, fused=device == 'cuda')
  inputs = {k: torch.from_numpy(batch_np[k]).long().to(device)
            for k in ('input_ids', 'attention_mask')}
  labels = torch.from_numpy(batch_np['labels']).long().to(device)
  dtype = getattr(torch, FLAGS.dtype)

  def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device_type=device, dtype=dtype):
      loss = model(**inputs, labels=labels).loss
    loss.backward()
    opt.step()

  def sync(_):
    if device == 'cuda':
      torch.cuda.synchronize()

  seconds = time_steps(step, sync, FLAGS.steps, FLAGS.repeats)
  return {'step_s': statistics.median(seconds), 'samples': seconds,
          'trainable': sum(p.numel() for p in params), 'device': device,
          'attention': getattr(model.config, '_attn_implementation', '?')}


def make_batch() -> dict[str, np.ndarray]:
  rng = np.random.RandomState(0)
  shape = (FLAGS.batch, FLAGS.length)
  ids = rng.randint(3, shape_config().vocab_size, size=shape).astype(np.int32)
  return {'input_ids': ids, 'attention_mask': np.ones_like(ids),
          'token_type_ids': np.zeros_like(ids),
          'labels': rng.randint(0, 2, size=(FLAGS.batch,)).astype(np.int32)}


CALL_SUFFIX = ' [call '


def measured_name(key: str) -> str:
  """The variant or peer name of a merged entry ('adapter [call 3]' -> 'adapter')."""
  return key.split(CALL_SUFFIX)[0]


def merge_results(results: list[dict[str, Any]]) -> dict[str, Any]:
  """Several calls' gpu_step.json as one: each variant and peer keeps its call (numbered
  from 1) and that call's matmul rate; a name measured again in a later call is kept as
  `name [call k]`."""
  devices = {r['device'] for r in results}
  shapes = {(r['shape'], r['batch'], r['length'], r['dtype']) for r in results}
  if len(devices) > 1 or len(shapes) > 1:
    raise ValueError(f'Results from different devices {devices} or shapes {shapes}: '
                     'render them separately.')
  merged = dict(results[0], jax={}, torch={}, calls=len(results),
                matmul_rates=[r['matmul_flops'] for r in results])
  for call, r in enumerate(results, 1):
    for section in ('jax', 'torch'):
      for name, v in (r.get(section) or {}).items():
        key = name if name not in merged[section] else f'{name}{CALL_SUFFIX}{call}]'
        merged[section][key] = {'matmul_flops': r['matmul_flops'], 'call': call, **v}
  return merged


def step_ratios(jx: dict[str, dict[str, Any]]) -> list[tuple[str, str, float, float]]:
  """(numerator, denominator, ratio, goal) of the AdaMix targets, for every ablation set
  measured for both; a pair from one call is preferred to one across calls."""
  out = []
  for num_base, den_base, goal in (('adamix', 'adapter', 1.05),
                                   ('adamix+consistency', 'adapter', 2.1)):
    for num, r in jx.items():
      base, _, rest = num.partition('@')
      if base != num_base or measured_name(num) != num:
        continue
      den = den_base + ('@' + rest if rest else '')
      candidates = [k for k in jx if measured_name(k) == den]
      if not candidates:
        continue
      same = [k for k in candidates if jx[k].get('call') == r.get('call')]
      den = (same or candidates)[0]
      out.append((num, den, r['step_s'] / jx[den]['step_s'], goal))
  return out


def fill_flops(result: dict[str, Any]) -> None:
  """Counts missing per-step FLOPs by lowering the same step (abstract parameters) here;
  a PyTorch peer without our variant of its kind gets that variant's count."""
  missing = [n for n, v in result['jax'].items() if not math.isfinite(v.get('flops', math.nan))]
  peers = [k for k, v in (result.get('torch') or {}).items()
           if 'step_s' in v and measured_name(k) not in result['jax']]
  if not missing and not peers:
    return
  FLAGS.batch, FLAGS.length, FLAGS.dtype = result['batch'], result['length'], result['dtype']
  FLAGS.smoke = result['shape'] != 'roberta-large'
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in make_batch().items()}
  for section, names in (('jax', missing), ('torch', peers)):
    for name in names:
      lowered, *_ = lower_step(measured_name(name), batch, abstract=True)
      result[section][name]['flops'] = lowered_flops(lowered)
      result[section][name]['flops_counted_on'] = jax.default_backend()
      print(f"  {section} {name}: {result[section][name]['flops'] / 1e12:.2f} TFLOP/step "
            f'(XLA, lowered on {jax.default_backend()})', flush=True)


def render(result: dict[str, Any]) -> str:
  rows = []
  for name, r in result['jax'].items():
    rate = r.get('matmul_flops', result['matmul_flops'])
    achieved = r['flops'] / r['step_s']
    rows.append([f'ours: {name}', f"{r['trainable']:,}", f"{1e3 * r['step_s']:.1f}",
                 f"{r['flops'] / 1e12:.2f}", f'{achieved / 1e12:.0f}',
                 f'{100 * achieved / rate:.0f}%',
                 common.verdict(achieved / rate, MFU_GOAL, at_least=True),
                 f"{r['peak_gib']:.1f}", f"{r.get('compile_s', math.nan):.0f}"])
  peers = result.get('torch') or {}
  for kind, peer in peers.items():
    if 'step_s' not in peer:
      continue
    ours = result['jax'].get(measured_name(kind))
    flops = ours['flops'] if ours else peer.get('flops', float('nan'))
    rate = peer.get('matmul_flops', result['matmul_flops'])
    label = 'torch+PEFT lora' if kind.startswith('lora') else f'torch {kind}'
    rows.append([f"{label} ({peer['attention']})", f"{peer['trainable']:,}",
                 f"{1e3 * peer['step_s']:.1f}", f'{flops / 1e12:.2f} (ours)',
                 f"{flops / peer['step_s'] / 1e12:.0f}",
                 f"{100 * flops / peer['step_s'] / rate:.0f}%", '', '', ''])
  table = common.markdown_table(
      ['variant', 'trainable', 'ms / step', 'TFLOP / step (XLA)', 'TFLOP/s', 'MFU',
       f'≥ {MFU_GOAL:.0%}', 'XLA peak GiB', 'compile s'], rows)
  smoke = result['shape'] != 'roberta-large'
  rates = result.get('matmul_rates', [result['matmul_flops']])
  calls = result.get('calls', 1)
  counted = sorted({r['flops_counted_on']
                    for r in [*result['jax'].values(), *peers.values()]
                    if 'flops_counted_on' in r})
  lines = [f"## GPU step (`bash benchmarks/gpu.sh`){' — SMOKE (tiny shapes)' if smoke else ''}",
           '', f"Device: {result['device']}. {result['machine']}", '',
           f"Shape {result['shape']}, batch {result['batch']}, length {result['length']}, "
           f"{result['dtype']}; ms / step: median of {result.get('repeats', '?')} runs of "
           f"{result.get('steps', '?')} steps"
           + (f', {calls} calls (each row against its own call\'s matmul rate)'
              if calls > 1 else '')
           + f". Measured {result['dtype']} matmul: "
           + ' / '.join(f'{r / 1e12:.0f}' for r in rates) + ' TFLOP/s (the MFU denominator).'
           + (f" TFLOP / step: XLA's count of the same step lowered on {', '.join(counted)} "
              "(the device's cost analysis returned none); torch rows use the count of our "
              'step of the same kind.'
              if counted else ''), '', table]
  jx = result['jax']
  for num, den, ratio, goal in step_ratios(jx):
    calls = sorted({jx[num].get('call'), jx[den].get('call')} - {None})
    where = f' (calls {calls[0]} and {calls[1]})' if len(calls) > 1 else ''
    lines.append(f'{num} step / {den} step: {ratio:.3f}{where} (target ≤ {goal}: '
                 f'{common.verdict(ratio, goal)})')
    lines.append('')
  for kind, peer in peers.items():
    ours = jx.get(measured_name(kind))
    if 'step_s' not in peer:
      lines.append(f"torch {kind} peer failed: {peer.get('error', peer)}")
    elif ours:
      lines.append(f"torch {kind} step / our {kind} step: "
                   f"{peer['step_s'] / ours['step_s']:.2f}x")
    else:
      lines.append(f"torch {kind}: {1e3 * peer['step_s']:.1f} ms / step; our {kind} step "
                   'was not measured')
    lines.append('')
  return '\n'.join(lines) + '\n'


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.render:
    result = merge_results([json.loads(Path(p).read_text()) for p in FLAGS.render])
    fill_flops(result)
    text = render(result)
    print(text)
    print(f"Updated {common.update_section('gpu', text)}")
    return
  if FLAGS.smoke:
    FLAGS.batch, FLAGS.length, FLAGS.steps, FLAGS.repeats = 4, 16, 2, 2
  batch = make_batch()
  device = jax.devices()[0]
  result: dict[str, Any] = {
      'device': f'{device.platform}: {getattr(device, "device_kind", device)}',
      'machine': common.machine_description(),
      'shape': 'tiny (smoke)' if FLAGS.smoke else 'roberta-large',
      'batch': FLAGS.batch, 'length': FLAGS.length, 'dtype': FLAGS.dtype,
      'steps': FLAGS.steps, 'repeats': FLAGS.repeats}
  out = Path(os.environ.get('OUT') or FLAGS.out_dir or 'benchmarks/workdirs/gpu')
  out.mkdir(parents=True, exist_ok=True)

  def save():  # after every measurement: a run cut short keeps what it measured
    (out / 'gpu_step.json').write_text(json.dumps(result, indent=1, default=str))

  result['matmul_flops'] = matmul_rate(jnp.dtype(FLAGS.dtype))
  print(f"{FLAGS.dtype} matmul: {result['matmul_flops'] / 1e12:.1f} TFLOP/s", flush=True)
  result['jax'] = {}
  jax_variants(batch, result['jax'], result['matmul_flops'], on_result=save)
  result['torch'] = {}
  for kind in FLAGS.torch:
    try:
      result['torch'][kind] = torch_step(batch, kind)
    except Exception as e:  # pylint: disable=broad-except
      result['torch'][kind] = {'error': f'{type(e).__name__}: {e}'}
    print(f"  torch {kind}: {result['torch'][kind]}", flush=True)
    save()
  text = render(result)
  print(text)
  save()
  (out / 'gpu_step.md').write_text(text)
  print(f'Wrote {out}/gpu_step.json and gpu_step.md')


if __name__ == '__main__':
  cli.run(main)
