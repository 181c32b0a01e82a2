"""Few-shot Subj (subjectivity): LiST K=30 splits, LM-BFF's manual prompt (common.py)."""

import ml_collections

from configs.fewshot import common


def get_config():
  config = common.get_config()
  config.data.task = 'subj'
  # LM-BFF: *cls**sent_0*_This_is*mask*.*sep+*, {0:'subjective',1:'objective'}.
  config.prompt.template = '<S1> This is [MASK].'
  config.prompt.label_words = ml_collections.ConfigDict(
      {'0': 'subjective', '1': 'objective'})
  return config
