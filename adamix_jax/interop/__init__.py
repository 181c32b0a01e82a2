"""Trained runs out to the PyTorch ecosystem, and PEFT LoRA adapters in.

- `peft_io`: a `lora` / `adamix_lora` (merged) model as a PEFT LoRA adapter directory, and
  a PEFT LoRA adapter loaded into our model (plain or as the experts of a mixture).
- `hf_export`: a plain transformers `*ForSequenceClassification` directory (LoRA folded
  into the kernels), and bottleneck adapters in a documented safetensors layout.
- `torch_adapters` (needs PyTorch): attaches exported bottleneck adapters to a
  transformers BERT/RoBERTa with forward hooks.

Nothing here imports torch or peft except `torch_adapters`.
"""

from __future__ import annotations

import os
from pathlib import Path

FORMATS = ('peft', 'hf', 'adapters')


class InteropError(ValueError):
  """A model, adapter or checkpoint that an export or import cannot map (says why)."""


def convert_export(export_dir: str | os.PathLike, out_dir: str | os.PathLike, fmt: str, *,
                   base_checkpoint: str | None = None) -> Path:
  """Writes an adamix-jax export directory (`export.export_run`) in another format.

  Args:
    export_dir: the run's export (WORKDIR/export): merged tensors + export.json.
    out_dir: the directory to write.
    fmt: 'peft' (PEFT LoRA adapter), 'hf' (transformers checkpoint, LoRA folded) or
      'adapters' (bottleneck adapters for `torch_adapters`).
    base_checkpoint: where the base checkpoint lives now, if not where export.json says.

  Returns:
    `out_dir`.
  """
  # pylint: disable=import-outside-toplevel
  from adamix_jax import export
  from adamix_jax.interop import hf_export, peft_io
  if fmt not in FORMATS:
    raise InteropError(f'Unknown export format {fmt!r}; supported: {FORMATS}')
  model, params, info = export.load_export(export_dir, base_checkpoint=base_checkpoint)
  base = base_checkpoint or info['base_checkpoint']
  kwargs = dict(base_checkpoint=base, labels=info['labels'], trained=set(info['shapes']))
  if fmt == 'peft':
    return peft_io.export_peft(model, params, out_dir, **kwargs)
  if fmt == 'hf':
    return hf_export.export_hf(model, params, out_dir, base_checkpoint=base,
                               labels=info['labels'])
  return hf_export.export_adapters(model, params, out_dir, **kwargs)
