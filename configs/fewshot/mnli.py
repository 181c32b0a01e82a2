"""Few-shot MNLI: LiST K=30 splits, LM-BFF's manual prompt (common.py).

LiST's MNLI test file (GLUE dev_matched, over 4 MiB) is not bundled: put GLUE's
`MNLI/dev_matched.tsv` into `<data_dir>/MNLI/test.tsv`.
"""

import ml_collections

from configs.fewshot import common


def get_config():
  config = common.get_config()
  config.data.task = 'mnli'
  # LM-BFF run_experiment.sh: --max_seq_len 256 for MNLI.
  config.data.max_length = 256
  # LM-BFF: *cls**sent-_0*?*mask*,*+sentl_1**sep+*,
  # {'contradiction':'No','entailment':'Yes','neutral':'Maybe'}.
  config.prompt.template = '<S1:drop_last>? [MASK], <S2:lower_first>'
  config.prompt.label_words = ml_collections.ConfigDict(
      {'entailment': 'Yes', 'neutral': 'Maybe', 'contradiction': 'No'})
  return config
