"""Fine-tuning methods: what each one adds to the encoder and which parameters it trains.

| method      | adaptation  | trainable (besides the task head, always trainable)      |
|-------------|-------------|----------------------------------------------------------|
| adamix      | adamix      | the adapter experts                                      |
| adamix_lora | adamix_lora | the LoRA experts                                         |
| adapter     | adapter     | the adapter (placement 'ffn' = Pfeiffer, or 'houlsby')   |
| lora        | lora        | the LoRA factors                                         |
| bitfit      | none        | every bias of the encoder, LayerNorm biases included     |
| full        | none        | everything                                               |
| head_only   | none        | nothing                                                  |

LayerNorm scales and biases are frozen unless `train_layer_norm` (BitFit's `all` bias terms
include the LayerNorm biases, so bitfit trains those either way). The split into trainable
and frozen trees (`partition` / `combine`) keeps frozen weights out of the gradient and the
optimizer state.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from flax import traverse_util

from adamix_jax import merging, registry
from adamix_jax import model as model_lib
from adamix_jax.adapters import AdaptationConfig, adaptation_param_kind
from adamix_jax.encoder import EncoderConfig

Params = dict[str, Any]
Path = tuple[str, ...]

METHODS = registry.NAMES
# Placement aliases: Pfeiffer's adapter sits after the feed-forward block only.
PLACEMENT_ALIASES = {'pfeiffer': 'ffn'}
LAYER_NORMS = ('LayerNorm', 'layer_norm')


def adaptation_for(method: str, **fields: Any) -> AdaptationConfig:
  """The `AdaptationConfig` a method trains with.

  Args:
    method: one of `METHODS`.
    **fields: other `AdaptationConfig` fields (adapter_size, num_experts, lora_rank, ...);
      `placement='pfeiffer'` is accepted for 'ffn'.
  """
  kind = registry.get(method).kind
  if 'kind' in fields and fields['kind'] != kind:
    raise ValueError(f'method {method!r} uses kind {kind!r}, not {fields["kind"]!r}')
  fields = dict(fields, kind=kind)
  if 'placement' in fields:
    fields['placement'] = PLACEMENT_ALIASES.get(fields['placement'], fields['placement'])
  return AdaptationConfig(**fields)


def is_head(path: Path) -> bool:
  """The trained task head ('classifier'). The MLM head of prompt-based models is part of
  the pretrained model and stays frozen (it is trained only by `full`)."""
  return path[0] == 'classifier'


def is_mlm_head(path: Path) -> bool:
  return path[0] == 'mlm_head'


def is_layer_norm(path: Path) -> bool:
  return any(name in LAYER_NORMS for name in path[:-1])


def _trainable(path: Path, trains: str, train_layer_norm: bool) -> bool:
  if is_head(path) or trains == 'everything':
    return True
  if is_mlm_head(path):
    return False
  if train_layer_norm and is_layer_norm(path):
    return True
  if trains in ('adapter', 'lora'):
    return adaptation_param_kind(path) == trains
  if trains == 'bias':
    return path[-1] == 'bias'
  return False  # 'nothing': the head only


def trainable_mask(params: Params, method: str, *, train_layer_norm: bool = False) -> Params:
  """A tree of bools, the structure of `params`: True where the method trains the leaf.

  Args:
    params: model parameters (arrays or ShapeDtypeStructs).
    method: one of `METHODS`.
    train_layer_norm: also train every LayerNorm scale and bias of the encoder.

  Raises:
    ValueError: the method's adapters / LoRA factors are absent from `params` (a model built
      with another adaptation).
  """
  trains = registry.get(method).trains
  flat = traverse_util.flatten_dict(params)
  if trains in ('adapter', 'lora') and not any(adaptation_param_kind(p) == trains
                                                for p in flat):
    raise ValueError(f'method {method!r} trains {trains} parameters but the model has none: '
                     f'build it with methods.adaptation_for({method!r}).')
  return traverse_util.unflatten_dict(
      {p: _trainable(p, trains, train_layer_norm) for p in flat})


def partition(params: Params, mask: Params) -> tuple[Params, Params]:
  """Splits params into `(trainable, frozen)` nested dicts with disjoint leaves.

  Each holds only its own leaves (no placeholders), so an optimizer built on `trainable`
  has state for nothing else.
  """
  flat_mask = traverse_util.flatten_dict(mask)
  flat = traverse_util.flatten_dict(params)
  if flat.keys() != flat_mask.keys():
    raise ValueError('mask and params have different structures')
  trainable = {p: v for p, v in flat.items() if flat_mask[p]}
  frozen = {p: v for p, v in flat.items() if not flat_mask[p]}
  return traverse_util.unflatten_dict(trainable), traverse_util.unflatten_dict(frozen)


def combine(trainable: Params, frozen: Params) -> Params:
  """The inverse of `partition`: one tree holding the leaves of both."""
  flat = traverse_util.flatten_dict(frozen)
  flat_trainable = traverse_util.flatten_dict(trainable)
  overlap = flat.keys() & flat_trainable.keys()
  if overlap:
    raise ValueError(f'trainable and frozen overlap: {sorted("/".join(p) for p in overlap)}')
  flat.update(flat_trainable)
  return traverse_util.unflatten_dict(flat)


def _size(leaf: Any) -> int:
  return int(np.prod(leaf.shape))


def _counts(params: Params, method: str, train_layer_norm: bool) -> dict[str, int]:
  flat = traverse_util.flatten_dict(params)
  mask = traverse_util.flatten_dict(trainable_mask(params, method,
                                                   train_layer_norm=train_layer_norm))
  counts = {'backbone': 0, 'added': 0, 'head': 0, 'trainable': 0, 'trainable_backbone': 0}
  for path, leaf in flat.items():
    n = _size(leaf)
    if is_head(path):
      counts['head'] += n
    elif adaptation_param_kind(path):
      counts['added'] += n
    else:
      counts['backbone'] += n
    if mask[path]:
      counts['trainable'] += n
      counts['trainable_backbone'] += 0 if is_head(path) else n
  counts['total'] = counts['backbone'] + counts['added'] + counts['head']
  return counts


def parameter_report(params: Params, method: str, adaptation: AdaptationConfig, *,
                     train_layer_norm: bool = False,
                     lora_merge: str = 'mean_factors') -> dict[str, Any]:
  """Parameter counts of a model, before and after merging its experts.

  Counts (integers): `backbone` (the pretrained encoder, adapters and LoRA excluded),
  `added` (adapters / LoRA factors), `head` (task head), `total`, `trainable` (the method's
  trainable set, head included) and `trainable_backbone` (trainable minus the head: the
  adapters for adapter methods, the biases for bitfit; the number papers usually quote).
  Percentages of the backbone: `trainable_pct`, `trainable_backbone_pct`. The same keys
  prefixed `merged_` describe the model inference runs (equal for non-mixture methods).

  Args:
    params: model parameters (arrays or ShapeDtypeStructs; nothing is computed).
    method: one of `METHODS`.
    adaptation: the adaptation the params were built with.
    train_layer_norm: as in `trainable_mask`.
    lora_merge: as in `merging.merge_experts`.
  """
  kind = registry.get(method).kind
  if adaptation.kind != kind:
    raise ValueError(f'method {method!r} uses adaptation kind {kind!r}, got '
                     f'{adaptation.kind!r}')
  merged_adaptation = None

  def merge(p):
    nonlocal merged_adaptation
    merged, merged_adaptation = merging.merge_experts(p, adaptation, lora_merge=lora_merge)
    return merged

  merged = jax.eval_shape(merge, params)
  report: dict[str, Any] = {'method': method, 'kind': adaptation.kind,
                            'merged_kind': merged_adaptation.kind}
  for prefix, tree in (('', params), ('merged_', merged)):
    counts = _counts(tree, method, train_layer_norm)
    for name, value in counts.items():
      report[prefix + name] = value
    for name in ('trainable', 'trainable_backbone'):
      report[f'{prefix}{name}_pct'] = 100.0 * counts[name] / max(counts['backbone'], 1)
  return report


def count_from_shapes(encoder_config: EncoderConfig, adaptation: AdaptationConfig,
                      method: str, num_labels: int, *, head: str = 'classifier',
                      label_word_ids: tuple[int, ...] = (), train_layer_norm: bool = False,
                      lora_merge: str = 'mean_factors') -> dict[str, Any]:
  """`parameter_report` from the configs alone: shapes via `jax.eval_shape`, no weights."""
  model = model_lib.Model(encoder_config, adaptation, head=head, num_labels=num_labels,
                          label_word_ids=tuple(label_word_ids))
  shapes = jax.eval_shape(lambda rng: model_lib.init_params(model, rng),
                          jax.random.PRNGKey(0))
  return parameter_report(shapes, method, adaptation, train_layer_norm=train_layer_norm,
                          lora_merge=lora_merge)
