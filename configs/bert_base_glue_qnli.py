"""GLUE QNLI with BERT-base and AdaMix (values and provenance: configs/glue.py)."""

from configs import glue


def get_config():
  return glue.get_glue_config('qnli', 'bert-base')
