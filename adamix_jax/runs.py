"""A run's set-up: the config validated before any work is spent, the data read and
tokenized, the pretrained model loaded and split into trainable and frozen parameters."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any

from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
import ml_collections

from adamix_jax import merging, methods, optim, prompts, registry, sharding
from adamix_jax.config_fields import ConfigError
from adamix_jax.adapters import ACTIVATIONS, LORA_TARGETS, PLACEMENTS, AdaptationConfig
from adamix_jax.data import pipeline, sources
from adamix_jax.data.tasks import TaskSpec
from adamix_jax.encoder import ATTENTIONS, REMATS
from adamix_jax.model import POOLINGS, Model, from_pretrained
from adamix_jax.routing import INFERENCE_MODES


@dataclasses.dataclass
class Run:
  """What a run is built from once: config, task, model, data, mesh and frozen weights."""

  config: ml_collections.ConfigDict
  workdir: epath.Path  # local, or gs:// on TPU pods
  task: TaskSpec
  model: Model
  adaptation: AdaptationConfig
  mesh: Mesh
  frozen: Any
  eval_sets: dict[str, pipeline.TokenizedDataset]
  train_set: pipeline.TokenizedDataset
  tokenizer: Any


def adaptation_from_config(config: ml_collections.ConfigDict) -> AdaptationConfig:
  fields = dict(config.adapter)
  fields['lora_targets'] = tuple(fields['lora_targets'])
  return methods.adaptation_for(config.method, **fields)


# XLA:CPU's default scheduler (concurrency-optimised) runs a rematerialised layer's
# recomputation as early as its inputs allow, inside the forward pass, so what remat should
# free stays live (the compiled step needs nearly as much memory as without remat); this flag
# selects the memory-ordered scheduler. Only read from XLA_FLAGS at start-up (as a
# per-program compiler option it is accepted and has no effect). Other backends schedule
# for memory themselves.
CPU_MEMORY_SCHEDULER = '--xla_cpu_enable_concurrency_optimized_scheduler=false'


def validate_config(config: ml_collections.ConfigDict, hidden_size: int | None = None,
                    num_devices: int | None = None, max_input_length: int | None = None
                    ) -> None:
  """Impossible settings fail before anything is trained or written. `hidden_size` and
  `max_input_length` (the model's position table) are checked once the model is known."""
  if config.method not in registry.METHODS:
    raise ConfigError(f'config.method={config.method!r} is unknown; choose from '
                      f'{", ".join(registry.NAMES)}')
  method = registry.get(config.method)
  a = config.adapter
  if method.trains == 'adapter':
    if a.adapter_size <= 0 or (hidden_size is not None and a.adapter_size >= hidden_size):
      raise ConfigError(f'config.adapter.adapter_size={a.adapter_size} must be in '
                        f'[1, hidden size{f" {hidden_size}" if hidden_size else ""})')
  if method.is_mixture and a.num_experts < 1:
    raise ConfigError(f'config.adapter.num_experts={a.num_experts} must be >= 1')
  if method.trains == 'lora' and a.lora_rank <= 0:
    raise ConfigError(f'config.adapter.lora_rank={a.lora_rank} must be >= 1')
  if config.model.head not in ('classifier', 'prompt'):
    raise ConfigError(f'config.model.head={config.model.head!r}: choose classifier or prompt')
  if config.model.pooling not in POOLINGS:
    raise ConfigError(f'config.model.pooling={config.model.pooling!r}: choose '
                      f'{" or ".join(POOLINGS)}')
  if config.model.get('attention', 'standard') not in ATTENTIONS:
    raise ConfigError(f'config.model.attention={config.model.attention!r}: choose '
                      f'{" or ".join(ATTENTIONS)}')
  if config.model.get('remat', 'none') not in REMATS:
    raise ConfigError(f'config.model.remat={config.model.remat!r}: choose '
                      f'{", ".join(REMATS)}')
  if config.model.head == 'prompt' and method.trains == 'nothing':
    raise ConfigError('method=head_only with model.head=prompt trains nothing: the MLM head '
                      'stays frozen. Use head=classifier, or another method.')
  if config.get('expert_updates', 'official') not in optim.EXPERT_UPDATES:
    raise ConfigError(f'config.expert_updates={config.expert_updates!r}: choose '
                      f'{", ".join(optim.EXPERT_UPDATES)}')
  if config.eval_mode not in INFERENCE_MODES:
    raise ConfigError(f'config.eval_mode={config.eval_mode!r}: choose '
                      f'{", ".join(INFERENCE_MODES)}')
  if config.merge not in ('mean', 'fisher'):
    raise ConfigError(f'config.merge={config.merge!r}: choose mean or fisher')
  if config.lora_merge not in merging.LORA_MERGES:
    raise ConfigError(f'config.lora_merge={config.lora_merge!r}: choose '
                      f'{" or ".join(merging.LORA_MERGES)}')
  if (config.method == 'adamix_lora' and config.merge == 'fisher' and
      config.lora_merge == 'mean_delta'):
    raise ConfigError("config.merge='fisher' weights each LoRA factor's elements separately; "
                      "it cannot give config.lora_merge='mean_delta' (the mean of the experts' "
                      "low-rank updates). Use merge='mean', or lora_merge='mean_factors'.")
  numbers = {'learning_rate': (0, False), 'weight_decay': (0, True),
             'consistency_weight': (0, True), 'grad_clip_norm': (0, True),
             'adam_eps': (0, False)}
  for name, (low, inclusive) in numbers.items():
    value = config[name]
    if not (isinstance(value, (int, float)) and math.isfinite(value) and
            (value >= low if inclusive else value > low)):
      raise ConfigError(f'config.{name}={value!r} must be a finite number '
                        f'{">=" if inclusive else ">"} {low}')
  for name in ('adam_b1', 'adam_b2', 'warmup_ratio'):
    value = config[name]
    if not (isinstance(value, (int, float)) and 0 <= value < 1 or
            name == 'warmup_ratio' and value == 1):
      raise ConfigError(f'config.{name}={value!r} must be in [0, 1'
                        f'{"]" if name == "warmup_ratio" else ")"}')
  if method.is_mixture and config.eval_mode == 'expert':
    if not 0 <= config.eval_expert < a.num_experts:
      raise ConfigError(f'config.eval_expert={config.eval_expert} is out of range: '
                        f'config.adapter.num_experts={a.num_experts} (eval_mode=expert takes '
                        f'an expert index in [0, {a.num_experts - 1}])')
  for name, low in INTEGER_FIELDS.items():
    _check_integer(config, name, low)
  for name in ('batch_size', 'eval_batch_size'):
    size = config[name]
    if num_devices and size % num_devices:
      raise ConfigError(f'config.{name}={size} is not divisible by the {num_devices} devices '
                        'of the data-parallel mesh')
  if not (_is_number(config.num_epochs) and math.isfinite(config.num_epochs)):
    raise ConfigError(f'config.num_epochs={config.num_epochs!r} must be a finite number')
  if config.num_train_steps <= 0 and config.num_epochs <= 0:
    raise ConfigError('Set config.num_epochs or config.num_train_steps to a positive value')
  length = config.data.max_length
  try:  # the task and its label set, from the data config alone (no file is read)
    sources.task_from_config(data_config(config))
  except sources.DataError:
    raise
  except ValueError as e:
    raise ConfigError(f'config.data (task={config.data.task!r}, source='
                      f'{config.data.source!r}): {e}') from None
  if config.mesh.data != -1 and config.mesh.data < 1:
    raise ConfigError(f'config.mesh.data={config.mesh.data} must be -1 (all devices) or >= 1')
  if a.placement not in PLACEMENTS and a.placement != 'pfeiffer':
    raise ConfigError(f'config.adapter.placement={a.placement!r}: choose '
                      f'{" or ".join(PLACEMENTS)}')
  if a.adapter_activation not in ACTIVATIONS:
    raise ConfigError(f'config.adapter.adapter_activation={a.adapter_activation!r}: choose '
                      f'{", ".join(sorted(ACTIVATIONS))}')
  if method.trains == 'lora':
    unknown = [t for t in a.lora_targets if t not in LORA_TARGETS]
    if unknown or not a.lora_targets:
      raise ConfigError(f'config.adapter.lora_targets={tuple(a.lora_targets)!r}: choose one '
                        f'or more of {", ".join(LORA_TARGETS)}')
    if not (_is_number(a.lora_alpha) and math.isfinite(a.lora_alpha) and a.lora_alpha > 0):
      raise ConfigError(f'config.adapter.lora_alpha={a.lora_alpha!r} must be a finite '
                        'number > 0')
    if not (_is_number(a.lora_dropout) and 0 <= a.lora_dropout < 1):
      raise ConfigError(f'config.adapter.lora_dropout={a.lora_dropout!r} must be in [0, 1)')
  if not (_is_number(a.init_std) and math.isfinite(a.init_std) and a.init_std >= 0):
    raise ConfigError(f'config.adapter.init_std={a.init_std!r} must be a finite number >= 0')
  if config.model.dtype not in DTYPES:
    raise ConfigError(f'config.model.dtype={config.model.dtype!r}: choose '
                      f'{" or ".join(DTYPES)}')
  if max_input_length is not None and length > max_input_length:
    raise ConfigError(f'config.data.max_length={length} exceeds the {max_input_length} tokens '
                      "the checkpoint's position table holds (max_position_embeddings)")


# Integer fields and their least value (types: ml_collections refuses a float for an int
# field given on the command line; a config file may still hold one).
INTEGER_FIELDS = {
    'batch_size': 1, 'eval_batch_size': 1, 'num_train_steps': None, 'eval_every_steps': 0,
    'checkpoint_every_steps': 0, 'max_checkpoints_to_keep': 1, 'log_every_steps': 1,
    'fisher_batches': 1, 'seed': 0, 'eval_expert': 0, 'data.max_length': 1,
    'data.bucket_size': 1, 'data.max_train_examples': 0, 'adapter.adapter_size': None,
    'adapter.num_experts': None, 'adapter.lora_rank': None, 'mesh.data': None,
    'mesh.fsdp': 1, 'mesh.fsdp_min_size': 0,
}
DTYPES = ('float32', 'bfloat16')


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_integer(config: ml_collections.ConfigDict, dotted: str, low: int | None) -> None:
  value = config
  for part in dotted.split('.'):
    value = value[part]
  if not isinstance(value, int) or isinstance(value, bool):
    raise ConfigError(f'config.{dotted}={value!r} must be an integer')
  if low is not None and value < low:
    raise ConfigError(f'config.{dotted}={value} must be >= {low}')


def check_workdir(workdir: str | os.PathLike) -> None:
  """The workdir is a directory, or can be created as one, and can be written. Local paths
  only (gs:// is left to the storage client)."""
  text = os.fspath(workdir)
  if not text.strip():
    raise ConfigError('--workdir is empty: pass a directory for the run')
  if '://' in text:
    return
  path = os.path.abspath(os.path.expanduser(text))
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if existing != path and not os.path.isdir(existing):
    raise ConfigError(f'--workdir={text}: {existing} is a file, so the directory cannot be '
                      'created')
  if existing == path and not os.path.isdir(path):
    raise ConfigError(f'--workdir={text} is a file; expected a directory (created when '
                      'missing)')
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ConfigError(f'--workdir={text}: {existing} is not writable')
  for name in ('checkpoints', 'best', 'export', 'config.json', 'results.json'):
    inside = os.path.join(path, name)
    if os.path.exists(inside) and os.path.isdir(inside) == (name.endswith('.json')):
      raise ConfigError(f'--workdir={text}: {inside} is a '
                        f'{"directory" if name.endswith(".json") else "file"}; this run '
                        f'writes a {"file" if name.endswith(".json") else "directory"} there')


def check_run(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
              num_devices: int) -> Any:
  """Everything a run needs that can be checked without reading data or weights: the
  config's fields, the workdir, and the checkpoint (config.json, the safetensors headers,
  shapes, and the fields that depend on the encoder). Writes nothing.

  Returns:
    The checkpoint directory.
  """
  from adamix_jax import hf_checkpoint  # pylint: disable=import-outside-toplevel
  validate_config(config, num_devices=num_devices)
  check_workdir(workdir)
  model_dir = hf_checkpoint.resolve_model_dir(config.model.checkpoint)
  encoder = hf_checkpoint.check_checkpoint(model_dir, allow_pickle=config.model.allow_pickle)
  validate_config(config, hidden_size=encoder.hidden_size, num_devices=num_devices,
                  max_input_length=encoder.max_input_length)
  return model_dir


def data_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """config.data, with a few-shot split seed of 0 meaning the run's seed (so a sweep over
  seeds walks over the <K>-<seed> splits, as the few-shot protocol does)."""
  data = ml_collections.ConfigDict(config.data.to_dict())
  source = sources.SOURCES.get(data.source)
  if source is not None and source.split_seed and not data.get('fewshot_seed'):
    data.fewshot_seed = int(config.seed)
  return data


def load_data(config: ml_collections.ConfigDict, tokenizer: Any) -> tuple[TaskSpec, pipeline.TokenizedDataset,
                                           dict[str, pipeline.TokenizedDataset],
                                           tuple[int, ...]]:
  """Reads and tokenizes every split; returns also the prompt's label-word ids (or ())."""
  data_cfg = data_config(config)
  task, train_examples = sources.load_examples(data_cfg, 'train')
  word_ids: tuple[int, ...] = ()
  if config.model.head == 'prompt':
    spec = prompts.PromptSpec.from_config(config.prompt)
    word_ids = prompts.label_word_ids(spec, task, tokenizer)
    tokenize = functools.partial(prompts.tokenize_prompt_examples, spec=spec)
  else:
    tokenize = pipeline.tokenize_examples
  eval_sets = {}
  for split in task.eval_splits:
    _, examples = sources.load_examples(data_cfg, split)
    eval_sets[split] = tokenize(examples, tokenizer=tokenizer,
                                max_length=config.data.max_length)
  train_set = tokenize(train_examples, tokenizer=tokenizer, max_length=config.data.max_length)
  return task, train_set, eval_sets, word_ids


def build_run(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> tuple[Run, Any]:
  """Loads data and the pretrained model; returns the run and the initial parameters."""
  validate_config(config)  # before the mesh, whose fields it checks
  mesh = sharding.make_mesh(config)
  model_dir = check_run(config, workdir, mesh.size)
  adaptation = adaptation_from_config(config)
  tokenizer = pipeline.load_tokenizer(model_dir)
  task, train_set, eval_sets, word_ids = load_data(config, tokenizer)
  model, params, report = from_pretrained(
      model_dir, adaptation=adaptation, head=config.model.head, num_labels=task.num_labels,
      label_word_ids=word_ids, pooling=config.model.pooling,
      dtype=jnp.dtype(config.model.dtype), attention=config.model.get('attention', 'standard'),
      remat=config.model.get('remat', 'none'),
      rng=jax.random.PRNGKey(config.seed), allow_pickle=config.model.allow_pickle)
  if config.model.peft_adapter:
    from adamix_jax.interop import peft_io  # pylint: disable=import-outside-toplevel
    params = peft_io.overlay_peft(params, adaptation, model.config,
                                  peft_io.read_peft(config.model.peft_adapter))
  validate_config(config, hidden_size=model.config.hidden_size, num_devices=mesh.size,
                  max_input_length=model.config.max_input_length)
  logging.info('%s', report.summary())
  if model.attention == 'fused' and model.config.attention_probs_dropout_prob > 0:
    logging.warning('config.model.attention=fused: the checkpoint\'s attention_probs_dropout_prob'
                    '=%s is not applied (fused attention has no dropout on the attention '
                    'probabilities); the other dropouts are.',
                    model.config.attention_probs_dropout_prob)
  if (model.remat != 'none' and jax.default_backend() == 'cpu'
      and CPU_MEMORY_SCHEDULER not in os.environ.get('XLA_FLAGS', '')):
    logging.warning('config.model.remat=%s on CPU frees little memory unless XLA_FLAGS has %s '
                    'when the process starts: the default CPU scheduler runs the '
                    'recomputation inside the forward pass.', model.remat, CPU_MEMORY_SCHEDULER)
  mask = methods.trainable_mask(params, config.method,
                                train_layer_norm=config.train_layer_norm)
  trainable, frozen = methods.partition(params, mask)
  frozen = jax.device_put(frozen, sharding.tree_shardings(frozen, mesh, config.mesh.fsdp_min_size))
  run = Run(config=config, workdir=epath.Path(workdir), task=task, model=model,
             adaptation=adaptation, mesh=mesh, frozen=frozen, eval_sets=eval_sets,
             train_set=train_set, tokenizer=tokenizer)
  return run, trainable


def total_train_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  return int(config.num_epochs * steps_per_epoch)
