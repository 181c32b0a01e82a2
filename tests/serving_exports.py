"""Exports for the serving tests: one tiny base checkpoint, several methods, label counts and
heads, their trained tensors random so that every task predicts differently."""

from __future__ import annotations

from pathlib import Path

from adamix_jax.adapters import AdaptationConfig
from adamix_jax.data import SAMPLES_DIR
from adamix_jax.data.formats import Example
from benchmarks import multitask

MAX_LENGTH = 24

# (name, method, merged method, adaptation, labels (None: regression), text columns, head,
# pooling): bottleneck adapters of two sizes and placements, LoRA of two ranks, targets and
# scales, 2/3/4 labels, a regression head, a prompt head (the MLM checkpoint has no pooler:
# the classifiers mean-pool).
TASKS = (
    ('sentiment', 'adapter', 'adapter', AdaptationConfig('adapter', adapter_size=4),
     ('neg', 'pos'), ('sentence',), 'classifier', 'mean'),
    ('topic', 'adamix', 'adapter',
     AdaptationConfig('adapter', adapter_size=8, placement='houlsby'),
     ('a', 'b', 'c'), ('sentence',), 'classifier', 'mean'),
    ('score', 'lora', 'lora', AdaptationConfig('lora', lora_rank=2, lora_alpha=16.0),
     None, ('sentence',), 'classifier', 'mean'),
    ('nli', 'adamix_lora', 'lora',
     AdaptationConfig('lora', lora_rank=4, lora_alpha=8.0,
                      lora_targets=('query', 'key', 'output')),
     ('w', 'x', 'y', 'z'), ('premise', 'hypothesis'), 'classifier', 'mean'),
    ('prompted', 'adapter', 'adapter', AdaptationConfig('adapter', adapter_size=4),
     ('0', '1'), ('sentence',), 'prompt', 'cls'),
)
PROMPT = {'template': '<S1> It was [MASK].', 'label_words': {'0': 'terrible', '1': 'great'}}


def write_random_export(out: Path, base: Path, name, method, merged, adaptation, labels,
                        text_columns, head, pooling, seed: int) -> Path:
  """An export whose trained tensors are random (LoRA's B and the heads included), so that
  every task predicts differently from every other."""
  return multitask.random_export(out, base, name, method, merged, adaptation, labels,
                                 text_columns, head, pooling, seed, max_length=MAX_LENGTH,
                                 prompt=PROMPT)


def sentences(n: int, offset: int = 0) -> list[str]:
  lines = (SAMPLES_DIR / 'SST-2' / 'dev.tsv').read_text().splitlines()[1:]
  return [l.split('\t')[0] for l in lines[offset:offset + n]]


def examples_for(name: str, n: int, offset: int = 0) -> list[Example]:
  texts = sentences(n + 1, offset)
  two = len(dict((t[0], t[5]) for t in TASKS)[name]) == 2
  return [Example((texts[i], texts[i + 1]) if two else (texts[i],), 0) for i in range(n)]



def write_exports(root: Path, base: Path, names: tuple[str, ...] | None = None
                  ) -> dict[str, Path]:
  """{name: export directory} of the `TASKS` named (all by default) over `base`."""
  return {spec[0]: Path(write_random_export(root / spec[0], base, *spec, seed=i))
          for i, spec in enumerate(TASKS) if names is None or spec[0] in names}
