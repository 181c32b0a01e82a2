"""GLUE COLA with RoBERTa-large and AdaMix (values and provenance: configs/glue.py)."""

from configs import glue


def get_config():
  return glue.get_glue_config('cola', 'roberta-large')
