"""The fine-tuning methods: one record each, asked by every place that treats methods apart.

Adding a method is one entry in `METHODS` (and, for a new kind of adaptation, its modules).
This module imports nothing heavy: config files read it.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any, Mapping

# What a method trains besides the task head (always trained):
TRAINS = ('adapter', 'lora', 'bias', 'everything', 'nothing')

# AdaMix's official scripts (microsoft/AdaMix roberta_large_mnli_expert_soup.sh):
# --num_experts 4 --sharing_up 1 --sharing_down 0 --use_consistency_loss 1, i.e. four experts
# sharing one up (LoRA: B) projection and the consistency loss with weight 1.
_MIXTURE = {'consistency_weight': 1.0, 'adapter.num_experts': 4, 'adapter.share_up': True,
            'adapter.share_down': False}
# The baselines of the AdaMix tables are trained without any consistency (R-Drop-style) term.
_BASELINE = {'consistency_weight': 0.0}
# LoRA (Hu et al., 2021) adapts W_q and W_v only in its GLUE experiments; rank 8 and alpha 16
# as in microsoft/LoRA examples/NLU/roberta_large_sst2.sh.
_LORA = {'adapter.lora_rank': 8, 'adapter.lora_alpha': 16.0,
         'adapter.lora_targets': ('query', 'value')}


@dataclasses.dataclass(frozen=True)
class Method:
  """A fine-tuning method.

  Attributes:
    name: the `config.method` value.
    kind: the `AdaptationConfig.kind` it adds to the encoder.
    trains: what it trains besides the task head (one of `TRAINS`).
    merged: the method whose model its merged (served) model is: 'adapter' for 'adamix'.
    preset: config values (dotted names) a sweep sets before the command line's overrides;
      only what differs between methods.
  """

  name: str
  kind: str
  trains: str
  merged: str
  preset: Mapping[str, Any]

  @property
  def is_mixture(self) -> bool:
    return self.merged != self.name


METHODS: dict[str, Method] = {m.name: m for m in (
    Method('adamix', 'adamix', 'adapter', 'adapter', _MIXTURE),
    Method('adamix_lora', 'adamix_lora', 'lora', 'lora', {**_MIXTURE, **_LORA}),
    Method('adapter', 'adapter', 'adapter', 'adapter', _BASELINE),
    Method('lora', 'lora', 'lora', 'lora', {**_BASELINE, **_LORA}),
    # BitFit (Ben Zaken et al., 2022) searches lr in {1e-4, 4e-4, 7e-4, 1e-3}: bias-only
    # updates want a larger rate than adapters; the top of that grid.
    Method('bitfit', 'none', 'bias', 'bitfit', {**_BASELINE, 'learning_rate': 1e-3}),
    # RoBERTa (Liu et al., 2019, Table 10) tunes GLUE over lr in {1e-5, 2e-5, 3e-5}: the low
    # end (the adapter rate of 4e-4 would wreck the pretrained weights).
    Method('full', 'none', 'everything', 'full', {**_BASELINE, 'learning_rate': 1e-5}),
    Method('head_only', 'none', 'nothing', 'head_only', _BASELINE),
)}
for _m in METHODS.values():
  object.__setattr__(_m, 'preset', MappingProxyType(dict(_m.preset)))
NAMES = tuple(METHODS)
MIXTURES = tuple(name for name, m in METHODS.items() if m.is_mixture)


def get(name: str) -> Method:
  """The method called `name`; an unknown name is refused, listing the known ones."""
  try:
    return METHODS[name]
  except (KeyError, TypeError):
    raise ValueError(f'Unknown method {name!r}; choose from {", ".join(NAMES)}') from None
