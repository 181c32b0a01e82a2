"""Prompt-based fine-tuning inputs (LM-BFF, Gao et al. 2021): templates and verbalizers.

A `PromptSpec` is data: a template such as `'<S1> It was [MASK].'` and one label word
per class (`{'0': 'terrible', '1': 'great'}`). The model reads the MLM logits of the
label words at the mask (`Model(head='prompt')`).

Template syntax:
  * `<S1>`, `<S2>`: the example's first / second text (whitespace around it trimmed).
    Modifiers reproduce LM-BFF's: `<S1:drop_last>` drops the text's last character
    (LM-BFF `*sent-_0*`, used to drop the final period before '?'), `<S2:lower_first>`
    lower-cases its first character (`*sentl_1*`); they combine, e.g.
    `<S2:drop_last:lower_first>`.
  * `[MASK]`: the tokenizer's mask token, whatever its spelling ('[MASK]', '<mask>').
  * anything else is literal text. Spaces are significant where the tokenizer cares:
    with a byte-level BPE (RoBERTa) `'<S1> It was'` gives 'ĠIt' but `'<S1>It'` gives
    'It', and the space before `<S2>` makes its first token 'Ġ...'. Spaces before
    `[MASK]` do not matter (the mask is one token; RoBERTa's absorbs a space).

Rendering follows LM-BFF's `tokenize_multipart_input`: every part is tokenized on its
own and the ids are concatenated into one segment, `[CLS] ... [SEP]` / `<s> ... </s>`
(token type 0 throughout). Truncation only ever shortens the texts (longest first,
from their ends), never the template or the mask.

Label words follow LM-BFF too: a word is tokenized as `' ' + word` (a word after a
space: 'Ġgreat' for RoBERTa; WordPiece and SentencePiece ignore the space) and must be
one token; a word starting with '<', '[', '.' or ',' is taken as a vocabulary token
as written.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

import numpy as np

from adamix_jax.data.pipeline import TokenizedDataset
from adamix_jax.data.readers import Example
from adamix_jax.data.tasks import TaskSpec

MASK = '[MASK]'
_PLACEHOLDER = re.compile(r'<S(\d+)((?::[A-Za-z_]+)*)>|\[MASK\]')
_MODIFIERS = {
    'drop_last': lambda text: text[:-1],
    'lower_first': lambda text: text[:1].lower() + text[1:],
}
# LM-BFF takes label words starting with these as vocabulary tokens, without a space.
_VERBATIM_PREFIXES = ('<', '[', '.', ',')


@dataclasses.dataclass(frozen=True)
class _Text:
  text: str  # literal template text, with its leading whitespace


@dataclasses.dataclass(frozen=True)
class _Sentence:
  index: int  # 0-based: <S1> is 0
  modifiers: tuple[str, ...]
  space_before: bool  # the template has whitespace right before it


@dataclasses.dataclass(frozen=True)
class _Mask:
  pass


def _parse(template: str) -> tuple[_Text | _Sentence | _Mask, ...]:
  """Splits a template into literal text, sentence and mask parts (validated)."""
  template = template.strip()
  if not template:
    raise ValueError('Empty prompt template; e.g. "<S1> It was [MASK]." (see '
                     'adamix_jax/prompts.py).')
  parts, last = [], 0
  for match in _PLACEHOLDER.finditer(template):
    literal = template[last:match.start()]
    space_before = literal[-1:].isspace()
    if literal.strip():
      parts.append(_Text(literal.rstrip()))
    if match.group(0) == MASK:
      parts.append(_Mask())
    else:
      index = int(match.group(1)) - 1
      modifiers = tuple(m for m in match.group(2).split(':') if m)
      unknown = [m for m in modifiers if m not in _MODIFIERS]
      if unknown:
        raise ValueError(f'Prompt template {template!r}: unknown modifier(s) '
                         f'{unknown} in {match.group(0)!r}; known: '
                         f'{sorted(_MODIFIERS)}.')
      parts.append(_Sentence(index, modifiers, space_before))
    last = match.end()
  if template[last:].strip():
    parts.append(_Text(template[last:]))
  for part in parts:
    if isinstance(part, _Text) and re.search(r'<S\d|\[MASK', part.text):
      raise ValueError(f'Prompt template {template!r}: malformed placeholder in '
                       f'{part.text!r}; write <S1>, <S2>, <S1:drop_last> or [MASK].')
  if sum(isinstance(p, _Mask) for p in parts) != 1:
    raise ValueError(f'Prompt template {template!r} must contain [MASK] exactly '
                     'once.')
  indices = sorted(p.index for p in parts if isinstance(p, _Sentence))
  if indices not in ([0], [0, 1]):
    raise ValueError(f'Prompt template {template!r} must use <S1> (single texts) '
                     'or <S1> and <S2> (pairs), each exactly once; it uses '
                     f'{[f"<S{i + 1}>" for i in indices]}.')
  return tuple(parts)


@dataclasses.dataclass(frozen=True)
class PromptSpec:
  """A template and its verbalizer.

  Attributes:
    template: e.g. '<S1> It was [MASK].' (syntax in the module docstring).
    label_words: label name (as in `TaskSpec.labels`) -> its word, e.g.
      {'0': 'terrible', '1': 'great'}.
  """
  template: str
  label_words: dict[str, str]

  def __post_init__(self):
    object.__setattr__(self, 'label_words',
                       {str(k): str(v) for k, v in dict(self.label_words).items()})
    object.__setattr__(self, '_parts', _parse(self.template))
    empty = [k for k, v in self.label_words.items() if not v.strip()]
    if empty:
      raise ValueError(f'Empty label word for label(s) {empty}.')

  @property
  def num_texts(self) -> int:
    """1 for single-sentence templates, 2 for pair templates."""
    return 1 + max(p.index for p in self._parts if isinstance(p, _Sentence))

  @classmethod
  def from_config(cls, prompt_cfg: Any) -> PromptSpec:
    """From the `config.prompt` block (fields `template`, `label_words`)."""
    template = prompt_cfg.get('template', '') or ''  # a ConfigDict or a plain dict
    words = prompt_cfg.get('label_words', None) or {}
    if hasattr(words, 'to_dict'):
      words = words.to_dict()
    if not template.strip() or not words:
      raise ValueError('head="prompt" needs config.prompt.template and '
                       'config.prompt.label_words (see configs/fewshot/).')
    return cls(template, dict(words))

  def check_task(self, task: TaskSpec) -> None:
    """Raises unless this prompt fits `task` (text count, one word per label)."""
    if task.is_regression:
      raise ValueError(_regression_message(task.name))
    if self.num_texts != len(task.text_columns):
      raise ValueError(f'Prompt template {self.template!r} uses {self.num_texts} '
                       f'text(s); task {task.name!r} has '
                       f'{len(task.text_columns)} ({task.text_columns}).')
    missing = [l for l in task.labels if l not in self.label_words]
    extra = [l for l in self.label_words if l not in task.labels]
    if missing or extra:
      raise ValueError(f'Label words {self.label_words} do not match task '
                       f'{task.name!r} labels {task.labels}: missing {missing}, '
                       f'unknown {extra}.')


def _regression_message(name: str) -> str:
  return (f'Task {name!r} is a regression task, which is not supported with the '
          "prompt head (LM-BFF's interpolation between two label words is not "
          "implemented); use head='classifier'.")


def label_word_ids(spec: PromptSpec, task: TaskSpec, tokenizer: Any
                   ) -> tuple[int, ...]:
  """Vocabulary id of each label's word, in `task.labels` order.

  Raises:
    ValueError: a word that is not exactly one (known) token, names the word and
      its tokens; two labels with the same token; a regression task.
  """
  spec.check_task(task)
  ids = []
  for label in task.labels:
    word = spec.label_words[label]
    if word.startswith(_VERBATIM_PREFIXES):
      token_ids = [tokenizer.convert_tokens_to_ids(word)]
      how = 'is looked up as a vocabulary token'
    else:
      token_ids = tokenizer(' ' + word, add_special_tokens=False)['input_ids']
      how = (f'after a space tokenizes as '
             f'{tokenizer.convert_ids_to_tokens(token_ids)}')
    if len(token_ids) != 1 or token_ids[0] in (None, tokenizer.unk_token_id):
      raise ValueError(
          f'Label word {word!r} (label {label!r}) is not a single token of this '
          f'tokenizer: {word!r} {how}. The prompt head scores one vocabulary '
          'token per label; choose a word that is one known token.')
    ids.append(int(token_ids[0]))
  if len(set(ids)) != len(ids):
    raise ValueError(f'Label words {spec.label_words} map two labels to the same '
                     f'token ({ids}).')
  return tuple(ids)


@dataclasses.dataclass(frozen=True)
class _Renderer:
  """A template compiled for one tokenizer: fixed ids, and where texts go."""
  prefix: tuple[int, ...]  # special tokens before the template ([CLS] / <s>)
  suffix: tuple[int, ...]  # after it ([SEP] / </s>)
  parts: tuple[tuple[int, ...] | _Sentence | _Mask, ...]  # literal ids, a text slot
  mask_id: int

  @property
  def fixed_length(self) -> int:
    """Tokens of everything but the texts."""
    return len(self.prefix) + len(self.suffix) + sum(
        1 if isinstance(p, _Mask) else len(p)
        for p in self.parts if not isinstance(p, _Sentence))

  @property
  def slots(self) -> tuple[_Sentence, ...]:
    """The text slots in text-index order."""
    return tuple(sorted((p for p in self.parts if isinstance(p, _Sentence)),
                        key=lambda p: p.index))


def _compile(spec: PromptSpec, tokenizer: Any) -> _Renderer:
  mask_id = tokenizer.mask_token_id
  if mask_id is None:
    raise ValueError('The tokenizer has no mask token; the prompt head needs one.')
  # The special tokens a single sequence gets, read off the tokenizer's own
  # post-processor: encode the bare mask token and split around it.
  framed = tokenizer(tokenizer.mask_token)['input_ids']
  if framed.count(mask_id) != 1:
    raise ValueError(f'The tokenizer does not encode its mask token '
                     f'{tokenizer.mask_token!r} as one token ({framed}).')
  cut = framed.index(mask_id)
  parts = []
  for part in spec._parts:  # pylint: disable=protected-access
    if isinstance(part, _Text):
      ids = tuple(tokenizer(part.text, add_special_tokens=False)['input_ids'])
      if mask_id in ids:
        raise ValueError(f'Prompt template {spec.template!r}: the literal text '
                         f'{part.text!r} holds the mask token; write [MASK].')
      parts.append(ids)
    else:
      parts.append(part)
  return _Renderer(tuple(framed[:cut]), tuple(framed[cut + 1:]), tuple(parts),
                   mask_id)


def _slot_text(example: Example, slot: _Sentence) -> str:
  text = example.texts[slot.index].strip()
  for modifier in slot.modifiers:
    text = _MODIFIERS[modifier](text)
  return ' ' + text if slot.space_before else text


def _truncated_lengths(lengths: Sequence[int], budget: int) -> list[int]:
  """Longest-first truncation of `lengths` to sum to at most `budget`.

  Texts are cut to a common cap (shorter ones stay whole); a spare token goes to the
  text that was longer (the later one on ties), exactly as the fast tokenizers'
  truncation='longest_first' splits a pair, so prompt and classifier inputs of the
  same texts keep the same tokens.
  """
  if sum(lengths) <= budget:
    return list(lengths)
  cap = 0
  while sum(min(n, cap + 1) for n in lengths) <= budget:
    cap += 1
  out = [min(n, cap) for n in lengths]
  spare = budget - sum(out)
  for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], -i)):
    if spare and lengths[i] > cap:
      out[i] += 1
      spare -= 1
  return out


def _assemble(renderer: _Renderer, text_ids: Sequence[Sequence[int]],
              max_length: int) -> tuple[list[int], int]:
  budget = max_length - renderer.fixed_length
  if budget < len(text_ids):
    raise ValueError(f'The prompt template takes {renderer.fixed_length} tokens '
                     'with special tokens, leaving no room for the text(s) within '
                     f'max_length={max_length}; raise data.max_length or shorten '
                     'the template.')
  keep = _truncated_lengths([len(t) for t in text_ids], budget)
  ids, mask_position = list(renderer.prefix), -1
  for part in renderer.parts:
    if isinstance(part, _Sentence):
      ids.extend(text_ids[part.index][:keep[part.index]])
    elif isinstance(part, _Mask):
      mask_position = len(ids)
      ids.append(renderer.mask_id)
    else:
      ids.extend(part)
  ids.extend(renderer.suffix)
  return ids, mask_position


def _encode_texts(renderer: _Renderer, examples: Sequence[Example],
                  tokenizer: Any, chunk_size: int = 4096) -> list[list[list[int]]]:
  """[text index][example] -> token ids, tokenized as they sit in the template."""
  out = []
  for slot in renderer.slots:
    ids = []
    for start in range(0, len(examples), chunk_size):
      texts = [_slot_text(e, slot) for e in examples[start:start + chunk_size]]
      ids.extend(tokenizer(texts, add_special_tokens=False)['input_ids'])
    out.append(ids)
  return out


def _check_examples(spec: PromptSpec, examples: Sequence[Example]) -> None:
  if not examples:
    raise ValueError('No examples to tokenize.')
  if isinstance(examples[0].label, float):
    raise ValueError(_regression_message('(regression labels)'))
  counts = {len(e.texts) for e in examples}
  if counts != {spec.num_texts}:
    raise ValueError(f'Prompt template {spec.template!r} takes {spec.num_texts} '
                     f'text(s) per example; the examples have {sorted(counts)}.')


def render(example: Example, spec: PromptSpec, tokenizer: Any,
           max_length: int) -> tuple[list[int], int]:
  """One example through the template.

  Args:
    example: its texts fill <S1> (and <S2>).
    spec: the prompt.
    tokenizer: a Hugging Face (fast) tokenizer with a mask token.
    max_length: the most tokens, special tokens included; the texts are cut
      (longest first, from their ends) to fit, never the template.

  Returns:
    (input ids with special tokens, index of the mask token in them).
  """
  _check_examples(spec, [example])
  renderer = _compile(spec, tokenizer)
  text_ids = [ids[0] for ids in _encode_texts(renderer, [example], tokenizer)]
  return _assemble(renderer, text_ids, max_length)


def tokenize_prompt_examples(examples: Sequence[Example], spec: PromptSpec,
                             tokenizer: Any, max_length: int) -> TokenizedDataset:
  """Every example rendered through the template, as the pipeline's dataset.

  Like `pipeline.tokenize_examples`, plus `mask_positions`, so that batches from
  `TrainIterator` / `eval_batches` carry 'mask_positions' int32 [b]. All tokens are
  segment 0 (one sequence, as in LM-BFF).

  Args:
    examples: from the readers (classification labels).
    spec: the prompt; its template's text count must match the examples'.
    tokenizer: a Hugging Face fast tokenizer with a mask token.
    max_length: tokens per example, special tokens included.

  Returns:
    The ragged dataset with mask positions.
  """
  _check_examples(spec, examples)
  renderer = _compile(spec, tokenizer)
  columns = _encode_texts(renderer, examples, tokenizer)
  rows = [_assemble(renderer, [column[i] for column in columns], max_length)
          for i in range(len(examples))]
  lengths = np.fromiter((len(ids) for ids, _ in rows), np.int64, len(rows))
  offsets = np.concatenate([[0], np.cumsum(lengths)])
  input_ids = np.fromiter((t for ids, _ in rows for t in ids), np.int32,
                          offsets[-1])
  return TokenizedDataset(
      input_ids=input_ids, token_type_ids=np.zeros_like(input_ids),
      offsets=offsets, labels=np.asarray([e.label for e in examples], np.int32),
      pad_id=int(tokenizer.pad_token_id), max_length=int(max_length),
      mask_positions=np.asarray([m for _, m in rows], np.int32))
