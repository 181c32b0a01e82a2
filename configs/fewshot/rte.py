"""Few-shot RTE: LiST K=30 splits, LM-BFF's manual prompt (common.py)."""

import ml_collections

from configs.fewshot import common


def get_config():
  config = common.get_config()
  config.data.task = 'rte'
  # LM-BFF run_experiment.sh: --max_seq_len 256 for RTE.
  config.data.max_length = 256
  # LM-BFF: *cls**sent-_0*?*mask*,*+sentl_1**sep+*,
  # {'not_entailment':'No','entailment':'Yes'}.
  config.prompt.template = '<S1:drop_last>? [MASK], <S2:lower_first>'
  config.prompt.label_words = ml_collections.ConfigDict(
      {'entailment': 'Yes', 'not_entailment': 'No'})
  return config
