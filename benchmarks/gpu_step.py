"""AdaMix training step on one GPU: step time, MFU, and the PyTorch + PEFT peer.

  bash benchmarks/gpu.sh            # on a lent H100/H200 (see gpu.sh)
  python -m benchmarks.gpu_step --smoke   # tiny shapes, any CPU: checks the script runs

RoBERTa-large shape (random weights), bfloat16 compute (float32 parameters, LayerNorm and
softmax, as `config.model.dtype='bfloat16'`), batch 64, length 128. Per variant the step
is `train.train_step` jitted with the state donated, as `train_and_evaluate` runs it:
adamix+consistency is AdaMix as the paper trains it (4 experts, shared up projection, two
routed passes, consistency weight 1), adamix one routed pass, adapter the plain adapter of
the same size, lora rank 8 on query/value, full full fine-tuning. Ablations (suffixes,
combinable: `adapter@fused@rbg`): `@fused` cuDNN flash attention (no attention-probability
dropout); `@nodrop` every dropout rate 0; `@rbg` / `@unsafe_rbg` dropout masks and routing
from that PRNG instead of threefry; `@remat` / `@remat_dots` the encoder rematerialised
(`config.model.remat` full / dots; the FLOPs and MFU then count the recomputation too).
Time per step: `--steps` steps dispatched back to back, one sync, divided by the count;
the median of `--repeats` such measurements. MFU = (FLOPs of the step / time) / (the
measured bf16 matmul rate, 8192^3, same process). FLOPs: XLA's cost analysis of the
lowered (unoptimised) step, where every dot is still a dot (cost analysis does not count
the cuBLAS custom calls of the optimised GPU program). The peer: transformers + PEFT LoRA
(r=8, alpha 16, query+value), bf16 autocast over float32 weights, fused AdamW, default
(sdpa) attention, eager mode, same batch.

Writes gpu_step.json and gpu_step.md to $OUT when set (else to --out_dir).
"""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path
from typing import Any

from absl import app, flags
import jax
import jax.numpy as jnp

from benchmarks import common, diagnostics, steptime
from experiments import cli

FLAGS = flags.FLAGS


def shape_name(smoke: bool) -> str:
  return 'tiny' if smoke else 'roberta-large'


def time_variant(name: str, config, shared, batch, matmul_flops: float) -> dict[str, Any]:
  """Compiles and times variant `name`'s step alone (its buffers freed after)."""
  built = steptime.build(steptime.parse_variant(name), config, shared, dtype=FLAGS.dtype)
  step = steptime.compile_step(built, batch)
  seconds = steptime.time_runners({name: step.runner}, FLAGS.repeats, steps=FLAGS.steps,
                                  log=None)[name]
  return {'step_s': statistics.median(seconds), 'samples': seconds,
          'compile_s': step.compile_s, 'flops': diagnostics.flops(step.lowered),
          'trainable': built.num_trainable, 'matmul_flops': matmul_flops,
          'peak_gib': diagnostics.peak_bytes(step.compiled) / 2**30}


def fill_flops(result: dict[str, Any]) -> None:
  """Counts missing per-step FLOPs by lowering the same step (abstract parameters) here;
  a PyTorch peer without our variant of its kind gets that variant's count."""
  missing = [n for n, v in result['jax'].items() if not math.isfinite(v.get('flops', math.nan))]
  peers = [k for k, v in (result.get('torch') or {}).items()
           if 'step_s' in v and steptime.measured_name(k) not in result['jax']]
  if not missing and not peers:
    return
  config = steptime.SHAPES[shape_name(result['shape'] != 'roberta-large')]
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in
           steptime.make_batch(config, result['batch'], result['length']).items()}
  for section, names in (('jax', missing), ('torch', peers)):
    for name in names:
      variant = steptime.parse_variant(steptime.measured_name(name))
      built = steptime.build(variant, config, None, dtype=result['dtype'])
      entry = result[section][name]
      entry['flops'] = diagnostics.flops(steptime.compile_step(built, batch, True).lowered)
      entry['flops_counted_on'] = jax.default_backend()
      print(f"  {section} {name}: {entry['flops'] / 1e12:.2f} TFLOP/step "
            f'(XLA, lowered on {jax.default_backend()})', flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.render:
    result = steptime.merge_results([json.loads(Path(p).read_text()) for p in FLAGS.render])
    fill_flops(result)
    text = steptime.render_gpu(result)
    print(text)
    print(f"Updated {common.update_section('gpu', text)}")
    return
  try:
    for name in FLAGS.variants:
      steptime.parse_variant(name)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  if FLAGS.smoke:
    FLAGS.batch, FLAGS.length, FLAGS.steps, FLAGS.repeats = 4, 16, 2, 2
  shape = shape_name(FLAGS.smoke)
  config, shared, _ = steptime.backbone(shape)
  batch_np = steptime.make_batch(config, FLAGS.batch, FLAGS.length)
  batch = jax.device_put(batch_np)
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

  runner, flops = steptime.matmul(512 if FLAGS.smoke else 8192, jnp.dtype(FLAGS.dtype))
  seconds = steptime.time_runners({'matmul': runner}, 5, steps=10, log=None)['matmul']
  result['matmul_flops'] = flops / statistics.median(seconds)
  print(f"{FLAGS.dtype} matmul: {result['matmul_flops'] / 1e12:.1f} TFLOP/s", flush=True)
  result['jax'] = {}
  for name in FLAGS.variants:
    r = result['jax'][name] = time_variant(name, config, shared, batch, result['matmul_flops'])
    print(f"  {name}: {1e3 * r['step_s']:.1f} ms/step, {r['flops'] / 1e12:.2f} TFLOP/step "
          f"(compiled in {r['compile_s']:.0f} s)", flush=True)
    save()
  result['torch'] = {}
  for kind in FLAGS.torch:
    try:
      peer = steptime.torch_peer(kind, shape, config, batch_np, dtype=FLAGS.dtype)
      seconds = steptime.time_runners({kind: peer.runner}, FLAGS.repeats, steps=FLAGS.steps,
                                      log=None)[kind]
      result['torch'][kind] = {'step_s': statistics.median(seconds), 'samples': seconds,
                               'trainable': peer.trainable, 'device': peer.device,
                               'attention': peer.attention}
    except Exception as e:  # pylint: disable=broad-except
      result['torch'][kind] = {'error': f'{type(e).__name__}: {e}'}
    print(f"  torch {kind}: {result['torch'][kind]}", flush=True)
    save()
  text = steptime.render_gpu(result)
  print(text)
  save()
  (out / 'gpu_step.md').write_text(text)
  print(f'Wrote {out}/gpu_step.json and gpu_step.md')


def define_flags() -> None:
  """The command line (defined only when run as a program: other benchmark modules share
  flag names such as --batch and --variants)."""
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
  flags.DEFINE_list('render', [], 'Render these gpu_step.json files (fetched from the '
                    'device; several calls on one machine are merged, each variant keeping '
                    "its call's matmul rate) into benchmarks/notes/gpu.md (section gpu); "
                    'FLOP counts the device did not report are counted here by lowering the '
                    'same step on this backend. Runs nothing else.')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
