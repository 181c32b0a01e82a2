"""Many tasks over one backbone: memory and speed of `serving.MultiTaskPredictor`.

  python -m benchmarks.multitask [--tasks=1,4,16] [--batch=32] [--length=64] [--rounds=5]

For every N in --tasks, N exports over the bundled MiniLM-L6 (real weights), their trained
tensors random (speed and memory do not depend on their values), in two mixes:
- `adapter`: every task a merged AdaMix export (bottleneck adapter of width 32 after the
  FFN, as the quickstart trains), 2 or 3 labels;
- `mixed`: the same with every other task a LoRA export (rank 8 on query and value).
For each, side by side in one process:
- memory: the parameter bytes held on the device by one backbone + N stacked task tensors
  (`MultiTaskPredictor.memory_bytes`) against N separate models (`predict.Predictor`, each
  its own full copy of the parameters), and the ratio;
- throughput: N batches of --batch rows, every batch mixing all N tasks, through the
  multi-task forward, against the same N × batch rows one task at a time, each batch
  through its own task's `Predictor`; the ratio of rows per second (> 1: mixing is faster);
- the per-example gather: one batch through the multi-task forward holding N tasks,
  against the same rows through a single-task `Predictor`, seconds per batch and the
  ratio (the target at N = 16: at most 1.10x).
Timing: `common.time_interleaved` (every variant once per round, medians over rounds;
a ratio is the median of the per-round ratios). Memory is parameter bytes, not the process
RSS.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from absl import app, flags
import jax
import numpy as np
from flax import traverse_util

from adamix_jax import export, hf_checkpoint, methods, predict, prompts, serving
from adamix_jax.adapters import AdaptationConfig
from adamix_jax.data import pipeline
from adamix_jax.data.tasks import custom_task
from adamix_jax.encoder import EncoderConfig
from adamix_jax.model import Model, init_params
from benchmarks import common
from experiments import cli

FLAGS = flags.FLAGS

SECTION = 'serving/multitask'
GATHER_GOAL = 1.10

ADAPTER = ('adamix', 'adapter', AdaptationConfig('adapter', adapter_size=32))
LORA = ('lora', 'lora', AdaptationConfig('lora', lora_rank=8, lora_alpha=16.0,
                                         lora_targets=('query', 'value')))


def random_export(out: Path, base: Path, name: str, method: str, merged: str,
                  adaptation: AdaptationConfig, labels: tuple[str, ...] | None,
                  text_columns: tuple[str, ...], head: str, pooling: str, seed: int, *,
                  max_length: int, prompt: dict[str, Any] | None = None) -> Path:
  """An export over `base` whose trained tensors (adapters or LoRA factors, LoRA's B and
  the head included) are random, so that every task predicts differently."""
  task = custom_task(name, text_columns, labels)
  word_ids = ()
  if head == 'prompt':
    tokenizer = pipeline.load_tokenizer(base)
    word_ids = prompts.label_word_ids(prompts.PromptSpec.from_config(prompt), task,
                                      tokenizer)
  config = EncoderConfig.from_hf_dict(json.loads((base / 'config.json').read_text()))
  model = Model(config, adaptation, head=head, num_labels=task.num_labels,
                label_word_ids=word_ids, pooling=pooling)
  shapes = jax.eval_shape(lambda: init_params(model, jax.random.PRNGKey(0)))
  mask = traverse_util.flatten_dict(methods.trainable_mask(shapes, merged))
  rng = np.random.RandomState(seed)
  tensors = {'/'.join(k): (0.3 * rng.standard_normal(v.shape)).astype(np.float32)
             for k, v in traverse_util.flatten_dict(shapes).items() if mask[k]}
  return export.write_export(out, tensors, base_checkpoint=str(base), method=method,
                             merged_method=merged, adaptation=adaptation, task=task,
                             max_length=max_length, head=head, label_word_ids=word_ids,
                             pooling=pooling, prompt=prompt if head == 'prompt' else None)


def write_exports(root: Path, base: Path, n: int, mix: str, max_length: int) -> dict[str, Path]:
  """{name: export directory} of n tasks of `mix` over `base`."""
  out = {}
  for i in range(n):
    method, merged, adaptation = LORA if mix == 'mixed' and i % 2 else ADAPTER
    labels = ('a', 'b', 'c') if i % 3 == 2 else ('neg', 'pos')
    name = f'{mix}_{i:02d}'
    out[name] = random_export(root / name, base, name, method, merged, adaptation, labels,
                              ('sentence',), 'classifier', 'mean', seed=i,
                              max_length=max_length)
  return out


def make_batch(rows: int, length: int, vocab: int, seed: int) -> dict[str, np.ndarray]:
  rng = np.random.RandomState(seed)
  ids = rng.randint(1000, vocab, (rows, length)).astype(np.int32)
  ids[:, 0], ids[:, -1] = 101, 102
  return {'input_ids': ids, 'attention_mask': np.ones((rows, length), np.int32),
          'token_type_ids': np.zeros((rows, length), np.int32),
          'mask_positions': np.zeros((rows,), np.int32)}


def bench(exports: dict[str, Path], vocab_size: int, batch: int, length: int, rounds: int
          ) -> dict[str, Any]:
  """Memory, throughput and gather timings of one set of exports (see the module doc)."""
  n = len(exports)
  multi = serving.MultiTaskPredictor(exports, batch_size=batch, bucket_size=length).load()
  singles = {name: predict.Predictor(d, batch_size=batch, bucket_size=length)
             for name, d in exports.items()}
  batches = [make_batch(batch, length, vocab_size, seed=b) for b in range(n)]
  mixed_ids = [((np.arange(batch) + b) % n).astype(np.int32) for b in range(n)]
  one_task = np.zeros(batch, np.int32)

  def multi_call(rows, task_ids):
    return lambda: jax.block_until_ready(multi.forward({**rows, 'task': task_ids}))

  def single_call(name, rows):
    return lambda: jax.block_until_ready(singles[name].forward(rows))

  def all_mixed():
    for rows, ids in zip(batches, mixed_ids):
      multi_call(rows, ids)()

  def one_at_a_time():
    for name, rows in zip(exports, batches):
      single_call(name, rows)()

  first = next(iter(exports))
  samples = common.time_interleaved({
      'mixed': all_mixed, 'separate': one_at_a_time,
      'gather': multi_call(batches[0], one_task), 'single': single_call(first, batches[0]),
  }, rounds, log=None)
  per_round = lambda a, b: statistics.median(x / y for x, y in zip(samples[a], samples[b]))
  shared = multi.memory_bytes()
  separate = sum(p.memory_bytes() for p in singles.values())
  return {
      'tasks': n, 'batch': batch, 'length': length, 'rounds': rounds,
      'methods': sorted({t.method for t in multi.tasks.values()}),
      'shared_bytes': shared['frozen'] + shared['stacked'],
      'stacked_bytes': shared['stacked'], 'separate_bytes': separate,
      'mixed_s': common.median(samples['mixed']),
      'separate_s': common.median(samples['separate']),
      'gather_s': common.median(samples['gather']),
      'single_s': common.median(samples['single']),
      'throughput_ratio': per_round('separate', 'mixed'),
      'gather_ratio': per_round('gather', 'single'),
      'samples': samples,
  }


def render(rows: list[dict[str, Any]], machine: str) -> str:
  mib = lambda b: f'{b / 2**20:,.1f}'
  table = []
  for r in rows:
    rows_per_s = lambda s: f"{r['tasks'] * r['batch'] / s:,.0f}"
    table.append([
        r['mix'], r['tasks'], mib(r['shared_bytes']), mib(r['separate_bytes']),
        f"{r['separate_bytes'] / r['shared_bytes']:.2f}x", rows_per_s(r['mixed_s']),
        rows_per_s(r['separate_s']), f"{r['throughput_ratio']:.2f}x",
        f"{1e3 * r['gather_s']:.0f}", f"{1e3 * r['single_s']:.0f}",
        f"{r['gather_ratio']:.2f}x" + (
            f" ({common.verdict(r['gather_ratio'], GATHER_GOAL)} ≤ {GATHER_GOAL:.2f}x)"
            if r['tasks'] == 16 else '')])
  first = rows[0]
  return (
      f"Batches of {first['batch']} rows × {first['length']} tokens, MiniLM-L6 (real "
      f"weights), float32; medians of {first['rounds']} interleaved rounds. `adapter`: every "
      'task a merged AdaMix export (width 32 after the FFN); `mixed`: every other task LoRA '
      'rank 8 (query, value). Memory: parameter bytes on the device.\n\n' +
      common.markdown_table(
          ['mix', 'N', 'one backbone + N (MiB)', 'N models (MiB)', 'memory saved',
           'mixed rows/s', 'one task at a time rows/s', 'mixed / one at a time',
           'gather ms / batch', 'single-task ms / batch', 'gather / single'], table) +
      f'\n{machine}\n\nCommand: `python -m benchmarks.multitask --tasks='
      f"{','.join(str(r['tasks']) for r in rows if r['mix'] == first['mix'])} "
      f"--batch={first['batch']} --length={first['length']} --rounds={first['rounds']}`\n")


def save_numbers(machine: str, rows: list[dict[str, Any]]) -> Path:
  """benchmarks/results/serving-multitask.json: the machine and every row's numbers."""
  common.NUMBERS.mkdir(parents=True, exist_ok=True)
  path = common.NUMBERS / 'serving-multitask.json'
  path.write_text(json.dumps({'machine': machine, 'rows': rows}, indent=1))
  return path


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  counts = [int(n) for n in FLAGS.tasks]
  if any(n < 1 for n in counts):
    raise app.UsageError(f'--tasks must be positive numbers, got {FLAGS.tasks}')
  unknown = set(FLAGS.mixes) - {'adapter', 'mixed'}
  if unknown:
    raise app.UsageError(f'--mixes: unknown {sorted(unknown)}; known: adapter, mixed')
  base = hf_checkpoint.resolve_model_dir(FLAGS.checkpoint)
  config = EncoderConfig.from_hf_dict(json.loads((base / 'config.json').read_text()))
  rows = []
  machine = common.machine_description()
  with tempfile.TemporaryDirectory() as tmp:
    for mix in FLAGS.mixes:
      exports = write_exports(Path(tmp) / mix, base, max(counts), mix, FLAGS.length)
      for n in counts:
        result = bench(dict(list(exports.items())[:n]), config.vocab_size, FLAGS.batch,
                       FLAGS.length, FLAGS.rounds)
        result['mix'] = mix
        print(f"{mix} N={n}: memory {result['separate_bytes'] / result['shared_bytes']:.2f}x "
              f"smaller, mixed/one-at-a-time throughput {result['throughput_ratio']:.2f}x, "
              f"gather/single {result['gather_ratio']:.2f}x", flush=True)
        rows.append(result)
        if FLAGS.write:  # every finished row is kept, should a later one be interrupted
          save_numbers(machine, rows)
  text = render(rows, machine)
  print(text)
  if FLAGS.write:
    print(f'Updated {common.update_section(SECTION, text)} and {save_numbers(machine, rows)}')


def define_flags() -> None:
  """The command line (defined only when run as a program: other benchmark modules share
  flag names such as --tasks and --batch)."""
  flags.DEFINE_list('tasks', ['1', '4', '16'], 'Numbers of tasks served together.')
  flags.DEFINE_list('mixes', ['adapter', 'mixed'], 'Which task mixes (adapter, mixed).')
  flags.DEFINE_integer('batch', 32, 'Rows per forward pass.')
  flags.DEFINE_integer('length', 64, 'Tokens per row.')
  flags.DEFINE_integer('rounds', 5, 'Timed calls of each variant (interleaved rounds).')
  flags.DEFINE_string('checkpoint', hf_checkpoint.BUNDLED_MODEL, 'The shared base checkpoint.')
  flags.DEFINE_boolean('write', True, 'Write the table into benchmarks/notes/serving.md and '
                       'the numbers into benchmarks/results/serving-multitask.json.')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
