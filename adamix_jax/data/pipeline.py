"""Tokenize once, then batch deterministically into a few fixed shapes.

* `tokenize_examples` runs the checkpoint's fast tokenizer over a whole split once
  and keeps the ragged ids in memory (`TokenizedDataset`).
* Batches are padded to `bucket_length`: a multiple of `bucket_size` capped at
  `max_length`, so jit sees at most max_length / bucket_size shapes. The length is
  taken over the *global* batch, so every host pads its share to the same shape.
* `TrainIterator` visits epoch `e` in the order `permutation(seed, e)`; its state
  (epoch, position) is two ints, and restoring it resumes the exact same batches.
* `eval_batches` visits every example once in file order; the last batch is
  padded with weight-0 rows instead of being dropped.
* Host `p` of `P` takes rows [p*B/P, (p+1)*B/P) of each global batch of size B,
  the layout `jax.make_array_from_process_local_data` expects (`shard_batch`).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from adamix_jax.data.formats import Example

Batch = dict[str, np.ndarray]


def load_tokenizer(model_dir_or_name: str | Path) -> Any:
  """The checkpoint's fast (Rust) tokenizer.

  A local directory is read with local_files_only=True so that a missing file
  fails at once instead of falling back to the network.
  """
  from transformers import AutoTokenizer  # pylint: disable=g-import-not-at-top
  local = Path(model_dir_or_name).is_dir()
  tokenizer = AutoTokenizer.from_pretrained(str(model_dir_or_name),
                                            use_fast=True,
                                            local_files_only=local)
  if not tokenizer.is_fast:
    raise ValueError(f'{model_dir_or_name}: no fast tokenizer (tokenizer.json) '
                     'available.')
  if tokenizer.pad_token_id is None:
    raise ValueError(f'{model_dir_or_name}: the tokenizer has no pad token.')
  return tokenizer


@dataclasses.dataclass(frozen=True)
class TokenizedDataset:
  """A tokenized split, ragged: example i's tokens are [offsets[i]:offsets[i+1]].

  Attributes:
    input_ids: int32 [total tokens], all examples concatenated.
    token_type_ids: int32 [total tokens] (zeros when the tokenizer has none).
    offsets: int64 [n + 1] start of each example in the flat arrays.
    labels: int32 [n] class ids or float32 [n] regression targets.
    pad_id: the tokenizer's pad token id (0 for BERT, 1 for RoBERTa).
    max_length: the truncation length, also the longest padded batch.
    mask_positions: int32 [n] index of each example's mask token, for prompt-based
      inputs (`prompts.tokenize_prompt_examples`); None otherwise. When set,
      batches carry 'mask_positions' int32 [b] (0 on padding rows).
  """
  input_ids: np.ndarray
  token_type_ids: np.ndarray
  offsets: np.ndarray
  labels: np.ndarray
  pad_id: int
  max_length: int
  mask_positions: np.ndarray | None = None

  def __len__(self) -> int:
    return len(self.labels)

  @functools.cached_property
  def lengths(self) -> np.ndarray:
    """int64 [n] token count of each example."""
    return np.diff(self.offsets)

  def batch(self, indices: Sequence[int], length: int,
            num_padding: int = 0) -> Batch:
    """Rows `indices` (then `num_padding` dummy rows) padded to `length`.

    Dummy rows hold one unmasked pad token rather than none, so attention never
    normalises over an all-masked row (NaN in some kernels); their label is 0 and
    callers give them weight 0.
    """
    rows = len(indices) + num_padding
    input_ids = np.full((rows, length), self.pad_id, np.int32)
    token_type_ids = np.zeros((rows, length), np.int32)
    attention_mask = np.zeros((rows, length), np.int32)
    for row, i in enumerate(indices):
      start, stop = self.offsets[i], self.offsets[i + 1]
      input_ids[row, :stop - start] = self.input_ids[start:stop]
      token_type_ids[row, :stop - start] = self.token_type_ids[start:stop]
      attention_mask[row, :stop - start] = 1
    attention_mask[len(indices):, 0] = 1
    labels = np.zeros((rows,), self.labels.dtype)
    labels[:len(indices)] = self.labels[np.asarray(indices, np.int64)]
    batch = {'input_ids': input_ids, 'attention_mask': attention_mask,
             'token_type_ids': token_type_ids, 'labels': labels}
    if self.mask_positions is not None:
      mask_positions = np.zeros((rows,), np.int32)
      mask_positions[:len(indices)] = self.mask_positions[
          np.asarray(indices, np.int64)]
      batch['mask_positions'] = mask_positions
    return batch


def tokenize_examples(examples: Sequence[Example], tokenizer: Any,
                      max_length: int, *, chunk_size: int = 4096
                      ) -> TokenizedDataset:
  """Tokenizes every example once (sentence or pair), truncating to max_length.

  Args:
    examples: from the readers; all with the same number of texts.
    tokenizer: a Hugging Face fast tokenizer (`load_tokenizer`).
    max_length: tokens per example including special tokens; pairs lose tokens
      from the longer text first (truncation='longest_first').
    chunk_size: examples per tokenizer call, bounding peak memory.

  Returns:
    The ragged dataset.
  """
  if not examples:
    raise ValueError('No examples to tokenize.')
  num_texts = len(examples[0].texts)
  if any(len(e.texts) != num_texts for e in examples):
    raise ValueError('Examples mix single sentences and pairs.')
  if max_length < 4:  # [CLS] a [SEP] b [SEP] needs room for some text
    raise ValueError(f'max_length={max_length} is too small.')
  ids, types = [], []
  for start in range(0, len(examples), chunk_size):
    chunk = examples[start:start + chunk_size]
    columns = [[e.texts[k] for e in chunk] for k in range(num_texts)]
    encoded = tokenizer(*columns, truncation=True, max_length=max_length,
                        padding=False)
    ids.extend(encoded['input_ids'])
    # RoBERTa-style tokenizers return no segment ids: all segment 0.
    types.extend(encoded.get('token_type_ids') or
                 [[0] * len(x) for x in encoded['input_ids']])
  lengths = np.fromiter((len(x) for x in ids), np.int64, len(ids))
  offsets = np.concatenate([[0], np.cumsum(lengths)])
  regression = isinstance(examples[0].label, float)
  labels = np.asarray([e.label for e in examples],
                      np.float32 if regression else np.int32)
  return TokenizedDataset(
      input_ids=np.fromiter((t for x in ids for t in x), np.int32, offsets[-1]),
      token_type_ids=np.fromiter((t for x in types for t in x), np.int32,
                                 offsets[-1]),
      offsets=offsets, labels=labels, pad_id=int(tokenizer.pad_token_id),
      max_length=int(max_length))


def bucket_length(max_len_in_batch: int, max_length: int, bucket_size: int = 32,
                  pad_to_max: bool = False) -> int:
  """The padded length for a batch whose longest example has max_len_in_batch.

  Rounds up to a multiple of bucket_size, capped at max_length (which need not be
  a multiple), so at most ceil(max_length / bucket_size) shapes ever occur.
  """
  if max_len_in_batch > max_length:
    raise ValueError(f'An example of {max_len_in_batch} tokens exceeds '
                     f'max_length={max_length}.')
  if pad_to_max:
    return max_length
  if bucket_size <= 0:
    raise ValueError(f'bucket_size must be positive, got {bucket_size}.')
  rounded = -(-max(max_len_in_batch, 1) // bucket_size) * bucket_size
  return min(rounded, max_length)


def _host_slice(global_batch_size: int, process_index: int | None,
                process_count: int | None) -> slice:
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} is outside '
                     f'[0, {process_count}).')
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(f'global_batch_size={global_batch_size} must be a positive '
                     f'multiple of the process count {process_count}.')
  per_host = global_batch_size // process_count
  return slice(process_index * per_host, (process_index + 1) * per_host)


class TrainIterator:
  """Endless, deterministic, resumable training batches (this host's share).

  Epoch e visits the examples in `np.random.default_rng([seed, e]).permutation`
  order, so the stream depends on (seed, epoch) alone and `set_state` can jump
  anywhere without replaying earlier epochs.
  """

  def __init__(self, dataset: TokenizedDataset, global_batch_size: int,
               seed: int, *, bucket_size: int = 32, pad_to_max: bool = False,
               process_index: int | None = None,
               process_count: int | None = None,
               drop_remainder: bool = True):
    """Args:
      dataset: the tokenized training split.
      global_batch_size: examples per step over all hosts and devices.
      seed: fixes the order of every epoch.
      bucket_size: pad batch length to a multiple of this.
      pad_to_max: pad every batch to dataset.max_length instead.
      process_index, process_count: this host and the host count; None asks jax.
      drop_remainder: drop each epoch's last partial batch (the default; the
        dropped examples differ per epoch). If False, that batch is padded with
        weight-0 rows and every batch then carries a float32 'weights' [b].
    """
    self._dataset = dataset
    self._global_batch_size = global_batch_size
    self._seed = int(seed)
    self._bucket_size = bucket_size
    self._pad_to_max = pad_to_max
    self._drop_remainder = drop_remainder
    self._host = _host_slice(global_batch_size, process_index, process_count)
    n = len(dataset)
    self.steps_per_epoch = (n // global_batch_size if drop_remainder
                            else -(-n // global_batch_size))
    if self.steps_per_epoch == 0:
      raise ValueError(f'{n} training examples make no full batch of '
                       f'{global_batch_size}; lower the batch size or set '
                       'drop_remainder=False.')
    self._epoch, self._position = 0, 0
    self._order_epoch, self._order = -1, np.empty(0, np.int64)

  def get_state(self) -> dict[str, int]:
    """Where the next batch comes from: JSON-serialisable, for the checkpoint."""
    return {'epoch': self._epoch, 'position': self._position}

  def set_state(self, state: dict[str, Any]) -> None:
    """Resumes at `state` (from `get_state`); the next batch is the one an
    uninterrupted run would have produced there."""
    epoch, position = int(state['epoch']), int(state['position'])
    if epoch < 0 or not 0 <= position <= self.steps_per_epoch:
      raise ValueError(f'Invalid iterator state {dict(state)} for '
                       f'{self.steps_per_epoch} steps per epoch.')
    self._epoch, self._position = epoch, position

  def epoch_order(self, epoch: int) -> np.ndarray:
    """The permutation of example indices used in `epoch`."""
    if epoch != self._order_epoch:
      rng = np.random.default_rng([self._seed, epoch])
      self._order, self._order_epoch = rng.permutation(len(self._dataset)), epoch
    return self._order

  def __iter__(self) -> Iterator[Batch]:
    return self

  def __next__(self) -> Batch:
    if self._position >= self.steps_per_epoch:
      self._epoch, self._position = self._epoch + 1, 0
    size = self._global_batch_size
    rows = self.epoch_order(self._epoch)[self._position * size:
                                         (self._position + 1) * size]
    self._position += 1
    return _global_batch(self._dataset, rows, size, self._host,
                         self._bucket_size, self._pad_to_max,
                         with_weights=not self._drop_remainder)


def eval_batches(dataset: TokenizedDataset, global_batch_size: int, *,
                 bucket_size: int = 32, pad_to_max: bool = False,
                 process_index: int | None = None,
                 process_count: int | None = None) -> Iterator[Batch]:
  """Every example exactly once, in order; this host's share of each batch.

  The last global batch is filled up with padding rows so that all batches have
  the same number of rows; 'weights' (float32 [b]) is 1 for real rows and 0 for
  padding, so summing weighted per-example results over all hosts counts each
  example once. Yields ceil(len(dataset) / global_batch_size) batches.
  """
  host = _host_slice(global_batch_size, process_index, process_count)
  n = len(dataset)
  for start in range(0, n, global_batch_size):
    rows = np.arange(start, min(start + global_batch_size, n))
    yield _global_batch(dataset, rows, global_batch_size, host, bucket_size,
                        pad_to_max, with_weights=True)


def num_eval_batches(dataset: TokenizedDataset, global_batch_size: int) -> int:
  return -(-len(dataset) // global_batch_size)


def _global_batch(dataset: TokenizedDataset, rows: np.ndarray, size: int,
                  host: slice, bucket_size: int, pad_to_max: bool,
                  with_weights: bool) -> Batch:
  """This host's rows of the global batch `rows` padded up to `size` rows."""
  # The length comes from the whole global batch so all hosts agree on shapes.
  length = bucket_length(int(dataset.lengths[rows].max()), dataset.max_length,
                         bucket_size, pad_to_max)
  mine = rows[host.start:host.stop]  # may be short or empty in the last batch
  per_host = host.stop - host.start
  batch = dataset.batch(mine, length, num_padding=per_host - len(mine))
  if with_weights:
    weights = np.zeros((per_host,), np.float32)
    weights[:len(mine)] = 1.0
    batch['weights'] = weights
  return batch


def shard_batch(batch: Batch, mesh: Any, axis: str = 'data') -> dict[str, Any]:
  """Host-local numpy batch -> global jax.Arrays sharded along `axis` of `mesh`.

  Each host passes its own share (as produced above); the leading dimension of
  the result is the global batch.
  """
  import jax  # pylint: disable=g-import-not-at-top
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis))
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in batch.items()}
