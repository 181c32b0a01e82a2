"""Few-shot MPQA (polarity): LiST K=30 splits, LM-BFF's manual prompt (common.py)."""

import ml_collections

from configs.fewshot import common


def get_config():
  config = common.get_config()
  config.data.task = 'mpqa'
  # LM-BFF: *cls**sent_0*_It_was*mask*.*sep+*, {0:'terrible',1:'great'}.
  config.prompt.template = '<S1> It was [MASK].'
  config.prompt.label_words = ml_collections.ConfigDict({'0': 'terrible', '1': 'great'})
  return config
