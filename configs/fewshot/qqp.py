"""Few-shot QQP: LiST K=30 splits, LM-BFF's manual prompt (common.py).

LiST's QQP test file (GLUE dev, over 4 MiB) is not bundled: put GLUE's `QQP/dev.tsv`
into `<data_dir>/QQP/test.tsv`.
"""

import ml_collections

from configs.fewshot import common


def get_config():
  config = common.get_config()
  config.data.task = 'qqp'
  # LM-BFF: *cls**sent_0**mask*,*+sentl_1**sep+*, {'0':'No','1':'Yes'}. (Spaces before
  # [MASK] do not change the ids: the mask is one token.)
  config.prompt.template = '<S1> [MASK], <S2:lower_first>'
  config.prompt.label_words = ml_collections.ConfigDict({'0': 'No', '1': 'Yes'})
  return config
