"""Prompts: templates render exactly, label words resolve, prompt logits match HF MLMs."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

from adamix_jax import prompts
from adamix_jax.data import readers
from adamix_jax.data.pipeline import (TrainIterator, eval_batches, load_tokenizer,
                                      tokenize_examples)
from adamix_jax.data.readers import Example
from adamix_jax.data.tasks import get_task
from adamix_jax.prompts import (PromptSpec, label_word_ids, render,
                                tokenize_prompt_examples)
from conftest import save_tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SST2_WORDS = {'0': 'terrible', '1': 'great'}
NLI_WORDS = {'entailment': 'Yes', 'not_entailment': 'No'}
# Words the tiny BPE learns as single tokens after a space ('Ġgreat', ...).
CORPUS = ('the movie was great . it was terrible . a great film , a terrible plot ? '
          'Yes , No , Maybe . It was fine . The cat sat on the mat . a cat sat .')


@pytest.fixture(scope='module')
def bert_tokenizer(minilm_dir):
  return load_tokenizer(minilm_dir)


@pytest.fixture(scope='module')
def bpe_dir(tmp_path_factory) -> Path:
  """A tiny byte-level BPE saved as RoBERTa's tokenizer, mask with lstrip as roberta's."""
  tokenizers = pytest.importorskip('tokenizers')
  from transformers import RobertaTokenizerFast  # pylint: disable=import-outside-toplevel
  path = tmp_path_factory.mktemp('bpe')
  bpe = tokenizers.ByteLevelBPETokenizer()
  bpe.train_from_iterator([CORPUS] * 20, vocab_size=320, min_frequency=1,
                          special_tokens=['<s>', '<pad>', '</s>', '<unk>', '<mask>'],
                          show_progress=False)
  bpe.save_model(str(path))
  tokenizer = RobertaTokenizerFast(
      vocab=str(path / 'vocab.json'), merges=str(path / 'merges.txt'),
      mask_token=tokenizers.AddedToken('<mask>', lstrip=True, rstrip=False))
  tokenizer.save_pretrained(path / 'model')
  return path / 'model'


@pytest.fixture(scope='module')
def bpe_tokenizer(bpe_dir):
  return load_tokenizer(bpe_dir)


@pytest.fixture(scope='module')
def wordpiece_tokenizer(tmp_path_factory):
  """A tiny uncased WordPiece, so that the BERT parity model is tiny too."""
  tokenizers = pytest.importorskip('tokenizers')
  from transformers import BertTokenizerFast  # pylint: disable=import-outside-toplevel
  path = tmp_path_factory.mktemp('wordpiece')
  wordpiece = tokenizers.BertWordPieceTokenizer(lowercase=True)
  wordpiece.train_from_iterator([CORPUS] * 5, vocab_size=200, min_frequency=1,
                                special_tokens=['[PAD]', '[UNK]', '[CLS]', '[SEP]',
                                                '[MASK]'], show_progress=False)
  wordpiece.save_model(str(path))
  BertTokenizerFast(vocab=str(path / 'vocab.txt')).save_pretrained(path / 'model')
  return load_tokenizer(path / 'model')


def _tokens(tokenizer, ids):
  return tokenizer.convert_ids_to_tokens(list(ids))


# ----------------------------------------------------------------------------
# Rendering.


def test_single_sentence_renders_exactly(bert_tokenizer):
  ids, mask = render(Example(('A gripping film .',), 1),
                     PromptSpec('<S1> It was [MASK].', SST2_WORDS), bert_tokenizer, 32)
  assert _tokens(bert_tokenizer, ids) == ['[CLS]', 'a', 'gripping', 'film', '.', 'it',
                                          'was', '[MASK]', '.', '[SEP]']
  assert mask == 7


def test_bpe_template_keeps_lmbff_spacing(bpe_tokenizer):
  # LM-BFF's RTE template *cls**sent-_0*?*mask*,*+sentl_1**sep+*: the premise without
  # its final period, '?' glued to it, the hypothesis after a space, lower-cased.
  tok = bpe_tokenizer
  ids, mask = render(Example(('The cat sat on the mat.', 'A cat sat.'), 0),
                     PromptSpec('<S1:drop_last>? [MASK], <S2:lower_first>', NLI_WORDS),
                     tok, 64)
  enc = lambda text: tok(text, add_special_tokens=False)['input_ids']
  expected = ([tok.cls_token_id] + enc('The cat sat on the mat') + enc('?') +
              [tok.mask_token_id] + enc(',') + enc(' a cat sat.') + [tok.sep_token_id])
  assert ids == expected
  assert ids[mask] == tok.mask_token_id
  assert _tokens(tok, enc(' a cat sat.'))[0] == 'Ġa'  # the space is really there


@pytest.mark.parametrize('template, texts', [
    ('<S1> It was [MASK] .', ('a great film , really',)),
    ('<S1> It was [MASK].', ('the movie was fine',)),
    ('<S1> This is [MASK] .', ('The cat sat on the mat .',)),
    ('<S1> ? [MASK] , <S2>', ('The cat sat .', 'a cat sat on the mat')),
    ('<S1> [MASK] , <S2>', ('It was great', 'It was terrible .')),
])
@pytest.mark.parametrize('which', ['bert', 'bpe'])
def test_render_equals_tokenizing_the_filled_template(template, texts, which, request):
  # With spaces around every placeholder, rendering part by part must give what the
  # tokenizer gives for the whole filled-in string.
  tok = request.getfixturevalue(f'{which}_tokenizer')
  num = template.count('<S')
  words = SST2_WORDS if num == 1 else NLI_WORDS
  ids, mask = render(Example(texts, 0), PromptSpec(template, words), tok, 64)
  filled = template.replace('[MASK]', tok.mask_token)
  for i, text in enumerate(texts):
    filled = filled.replace(f'<S{i + 1}>', text)
  assert ids == tok(filled)['input_ids']
  assert ids[mask] == tok.mask_token_id and ids.count(tok.mask_token_id) == 1


@pytest.mark.parametrize('len1, len2, max_length', [
    (40, 10, 24), (10, 40, 24), (30, 30, 25), (30, 29, 26), (29, 30, 26), (3, 50, 12),
    (5, 5, 40)])
def test_truncation_is_longest_first_and_never_cuts_the_mask(bert_tokenizer, len1, len2,
                                                             max_length):
  tok = bert_tokenizer
  spec = PromptSpec('<S1> ? [MASK] , <S2>', NLI_WORDS)
  first, second = 'a ' * len1, 'b ' * len2
  ids, mask = render(Example((first, second), 0), spec, tok, max_length)
  # The template takes [CLS] ? [MASK] , [SEP]: 5 tokens; HF's own pair truncation of
  # the bare texts to the same budget tells how many a's and b's must survive.
  reference = tok(first, second, truncation='longest_first',
                  max_length=max_length - 5 + 3)['input_ids']
  keep_a, keep_b = reference.count(tok.convert_tokens_to_ids('a')), reference.count(
      tok.convert_tokens_to_ids('b'))
  assert _tokens(tok, ids) == (['[CLS]'] + ['a'] * keep_a + ['?', '[MASK]', ','] +
                               ['b'] * keep_b + ['[SEP]'])
  assert len(ids) == min(max_length, len1 + len2 + 5)
  assert ids[mask] == tok.mask_token_id


def test_truncation_of_single_text_keeps_template_tail(bert_tokenizer):
  ids, mask = render(Example(('word ' * 100,), 1),
                     PromptSpec('<S1> It was [MASK].', SST2_WORDS), bert_tokenizer, 16)
  assert len(ids) == 16
  assert _tokens(bert_tokenizer, ids[-5:]) == ['it', 'was', '[MASK]', '.', '[SEP]']
  assert mask == 13


def test_template_longer_than_max_length_is_an_error(bert_tokenizer):
  # [CLS] it was [MASK] . [SEP] is 6 tokens: nothing left for the sentence.
  with pytest.raises(ValueError, match='template takes 6 tokens'):
    render(Example(('fine',), 1), PromptSpec('<S1> It was [MASK].', SST2_WORDS),
           bert_tokenizer, 6)


@pytest.mark.parametrize('template, match', [
    ('<S1> It was great.', 'exactly once'),
    ('<S1> [MASK] [MASK]', 'exactly once'),
    ('<S2> [MASK]', 'each exactly once'),
    ('<S1> [MASK] <S1>', 'each exactly once'),
    ('<S1:upper> [MASK]', 'unknown modifier'),
    ('<S1 > [MASK]', 'malformed placeholder'),
    ('   ', 'Empty prompt template'),
])
def test_malformed_templates_are_rejected(template, match):
  with pytest.raises(ValueError, match=match):
    PromptSpec(template, SST2_WORDS)


def test_literal_mask_spelling_is_rejected(bpe_tokenizer):
  with pytest.raises(ValueError, match='write \\[MASK\\]'):
    render(Example(('a film',), 1), PromptSpec('<S1> It was <mask> [MASK].', SST2_WORDS),
           bpe_tokenizer, 32)


def test_template_must_fit_the_task():
  with pytest.raises(ValueError, match='uses 1 text'):
    PromptSpec('<S1> [MASK]', NLI_WORDS).check_task(get_task('rte'))
  with pytest.raises(ValueError, match=r"missing \['1'\], unknown \['2'\]"):
    PromptSpec('<S1> [MASK]', {'0': 'bad', '2': 'good'}).check_task(get_task('sst2'))


# ----------------------------------------------------------------------------
# Label words.


def test_bpe_label_words_are_tokens_after_a_space(bpe_tokenizer):
  tok = bpe_tokenizer
  ids = label_word_ids(PromptSpec('<S1> It was [MASK].', SST2_WORDS), get_task('sst2'), tok)
  assert _tokens(tok, ids) == ['Ġterrible', 'Ġgreat']
  # Without the space 'great' is not even one token of this BPE.
  assert len(tok('great', add_special_tokens=False)['input_ids']) > 1


def test_wordpiece_label_words_in_label_order(bert_tokenizer):
  spec = PromptSpec('<S1> ? [MASK] , <S2>',
                    {'contradiction': 'No', 'neutral': 'Maybe', 'entailment': 'Yes'})
  ids = label_word_ids(spec, get_task('mnli'), bert_tokenizer)
  assert _tokens(bert_tokenizer, ids) == ['yes', 'maybe', 'no']  # task label order


@pytest.mark.parametrize('which, word', [('bert', 'fantastically'), ('bpe', 'wonderful')])
def test_multi_token_label_word_is_an_error_naming_it(which, word, request):
  tok = request.getfixturevalue(f'{which}_tokenizer')
  spec = PromptSpec('<S1> It was [MASK].', {'0': 'terrible', '1': word})
  with pytest.raises(ValueError, match=f"Label word '{word}' \\(label '1'\\)"):
    label_word_ids(spec, get_task('sst2'), tok)


def test_two_labels_on_one_token_is_an_error(bert_tokenizer):
  spec = PromptSpec('<S1> It was [MASK].', {'0': 'great', '1': 'Great'})
  with pytest.raises(ValueError, match='same token'):
    label_word_ids(spec, get_task('sst2'), bert_tokenizer)


def test_regression_is_refused_with_a_pointer_to_the_classifier(bert_tokenizer):
  spec = PromptSpec('<S1> [MASK] , <S2>', {'0': 'No', '1': 'Yes'})
  with pytest.raises(ValueError, match="use head='classifier'"):
    label_word_ids(spec, get_task('stsb'), bert_tokenizer)
  with pytest.raises(ValueError, match="use head='classifier'"):
    tokenize_prompt_examples([Example(('a', 'b'), 3.5)], spec, bert_tokenizer, 16)


# ----------------------------------------------------------------------------
# Datasets and batches.


def test_prompt_dataset_batches_carry_mask_positions(bert_tokenizer):
  examples = [Example((f'movie {"good " * i}',), i % 2) for i in range(7)]
  spec = PromptSpec('<S1> It was [MASK].', SST2_WORDS)
  dataset = tokenize_prompt_examples(examples, spec, bert_tokenizer, 16)
  for i, example in enumerate(examples):
    ids, mask = render(example, spec, bert_tokenizer, 16)
    start, stop = dataset.offsets[i], dataset.offsets[i + 1]
    assert dataset.input_ids[start:stop].tolist() == ids
    assert dataset.mask_positions[i] == mask
  batches = list(eval_batches(dataset, 4, bucket_size=8, process_index=0,
                              process_count=1))
  last = batches[-1]  # 3 real rows + 1 padding row
  assert last['mask_positions'].dtype == np.int32
  assert last['mask_positions'][-1] == 0 and last['weights'][-1] == 0
  for batch in batches:
    real = batch['weights'] == 1
    at_mask = batch['input_ids'][np.arange(4), batch['mask_positions']]
    assert (at_mask[real] == bert_tokenizer.mask_token_id).all()
    assert (batch['token_type_ids'] == 0).all()
  train = next(iter(TrainIterator(dataset, 2, seed=0, process_index=0, process_count=1)))
  assert train['mask_positions'].shape == (2,)
  plain = tokenize_examples(examples, bert_tokenizer, 16)
  assert 'mask_positions' not in plain.batch([0], 16)


# ----------------------------------------------------------------------------
# Logits parity with Hugging Face masked LMs.


def _hf_label_logits(checkpoint, model_type, batch, ids):
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  cls = (transformers.BertForMaskedLM if model_type == 'bert'
         else transformers.RobertaForMaskedLM)
  model = cls.from_pretrained(checkpoint).eval()
  with torch.no_grad():
    logits = model(input_ids=torch.tensor(batch['input_ids'], dtype=torch.long),
                   attention_mask=torch.tensor(batch['attention_mask'], dtype=torch.long),
                   token_type_ids=torch.tensor(batch['token_type_ids'],
                                               dtype=torch.long)).logits.numpy()
  rows = np.arange(len(logits))
  return logits[rows, batch['mask_positions']][:, list(ids)]


@pytest.mark.parametrize('model_type', ['bert', 'roberta'])
def test_prompt_logits_match_hf_masked_lm(model_type, request, tmp_path):
  from adamix_jax import model as model_lib  # pylint: disable=import-outside-toplevel
  tok = request.getfixturevalue('wordpiece_tokenizer' if model_type == 'bert'
                                else 'bpe_tokenizer')
  checkpoint = save_tiny_checkpoint(tmp_path / model_type, model_type, 'mlm', seed=3,
                                    vocab_size=len(tok))
  task = get_task('rte')
  spec = PromptSpec('<S1:drop_last>? [MASK], <S2:lower_first>', NLI_WORDS)
  examples = [Example(('The cat sat on the mat.', 'A cat sat.'), 0),
              Example(('It was a great film, a great plot.', 'The film was fine.'), 1),
              Example(('the movie ' * 30, 'It was terrible.'), 1)]  # truncated
  ids = label_word_ids(spec, task, tok)
  dataset = tokenize_prompt_examples(examples, spec, tok, 40)
  batch = next(eval_batches(dataset, 4, bucket_size=8, process_index=0, process_count=1))
  model, params, _ = model_lib.from_pretrained(checkpoint, head='prompt',
                                               label_word_ids=ids)
  ours = np.asarray(model.apply({'params': params}, batch['input_ids'],
                                batch['attention_mask'], batch['token_type_ids'],
                                batch['mask_positions'], deterministic=True))
  theirs = _hf_label_logits(checkpoint, model_type, batch, ids)
  real = batch['weights'] == 1
  assert ours.shape == (4, 2)
  np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------
# The few-shot configs.

FEWSHOT_CONFIGS = ('mnli', 'rte', 'qqp', 'sst2', 'subj', 'mpqa')


@pytest.mark.parametrize('name', FEWSHOT_CONFIGS)
def test_fewshot_config_prompt_fits_task_and_data(name, bert_tokenizer):
  sys.path.insert(0, str(ROOT))
  try:
    config = importlib.import_module(f'configs.fewshot.{name}').get_config()
  finally:
    sys.path.remove(str(ROOT))
  assert config.model.head == 'prompt'
  assert config.eval_every_steps == config.num_train_steps  # evaluate once, at the end
  spec = PromptSpec.from_config(config.prompt)
  from adamix_jax import runs  # pylint: disable=import-outside-toplevel
  # The split of the run's seed (data.fewshot_seed = 0), from the bundled LiST copy.
  task, train = readers.load_examples(runs.data_config(config), 'train')
  assert len(train) == 30 and task.eval_splits == ('test',)
  assert len(set(label_word_ids(spec, task, bert_tokenizer))) == task.num_labels
  dataset = tokenize_prompt_examples(train, spec, bert_tokenizer, config.data.max_length)
  assert len(dataset) == 30


def test_from_config_needs_template_and_words():
  import ml_collections  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match='config.prompt.template'):
    PromptSpec.from_config(ml_collections.ConfigDict(
        {'template': '', 'label_words': ml_collections.ConfigDict()}))


def test_verbatim_label_word_must_be_in_the_vocabulary(bert_tokenizer):
  # LM-BFF takes words starting with '[', '<', '.', ',' as tokens, without a space.
  ok = PromptSpec('<S1> It was [MASK]', {'0': '.', '1': '[unused1]'})
  assert _tokens(bert_tokenizer, label_word_ids(ok, get_task('sst2'), bert_tokenizer)) == [
      '.', '[unused1]']
  bad = PromptSpec('<S1> It was [MASK]', {'0': '.', '1': '[nonsense]'})
  with pytest.raises(ValueError, match=r"'\[nonsense\]' is looked up"):
    label_word_ids(bad, get_task('sst2'), bert_tokenizer)
