"""The few-shot protocol shared by configs/fewshot/<task>.py (AdaMix's few-shot NLU).

The AdaMix paper's few-shot results train RoBERTa-large with prompt-based fine-tuning
(LM-BFF, Gao et al. 2021) on the |K| = 30 labelled instances per task of LiST (Wang et
al. 2021), five seeds, reporting the mean. There is no dev set in that protocol, so a
run trains a fixed number of steps and evaluates once, at the end, on the test split
(no early stopping, no checkpoint selection on test).

Templates and label words are LM-BFF's manual ones, from princeton-nlp/LM-BFF
`run_experiment.sh` (the `TEMPLATE` / `MAPPING` per task; quoted from memory, not
re-checked against the repository while writing these files), written in our syntax
(adamix_jax/prompts.py): `*cls**sent_0*_It_was*mask*.*sep+*` is '<S1> It was [MASK].',
`*sent-_0*` is '<S1:drop_last>', `*+sentl_1*` is ' <S2:lower_first>'. Rendered to the
same RoBERTa token ids as LM-BFF, except that we trim whitespace around each text.
"""

from configs import default


def get_config():
  config = default.get_config()
  # The paper's backbone; prompt fine-tuning needs its pretrained MLM head (lm_head).
  config.model.checkpoint = 'roberta-large'
  config.model.head = 'prompt'
  # AdaMix adapters as in the paper's RoBERTa-large runs (bottleneck 16, 4 experts).
  config.method = 'adamix'
  config.adapter.adapter_size = 16

  # LiST's splits: <TASK>/30-<seed>/train (30 examples in total) and <TASK>/test.
  # '' = the bundled copy (adamix_jax/data/samples/few-shot-list): complete K=30 train
  # files, but test files cut to 100 rows; set --config.data.data_dir to the full
  # few-shot folder (e.g. ../shared/data/few-shot-list) for numbers.
  config.data.source = 'fewshot_list'
  config.data.data_dir = ''
  config.data.fewshot_k = 30
  # Seeds 1-5, one run each, averaged (experiments.fewshot / experiments.sweep --seeds=1,2,3,4,5).
  # data.fewshot_seed = 0 makes the split follow the run's seed: split 30-<seed>.
  config.seed = 1
  config.data.fewshot_seed = 0
  # LM-BFF's default; pair tasks with long premises raise it (mnli.py, rte.py).
  config.data.max_length = 128

  # Fixed-length training, our choice where the paper does not restate LiST's values:
  # 1000 steps as LM-BFF trains (about 270 passes over 30 examples), batch 8 (LM-BFF's
  # batch size; divisible by 8 devices), lr 3e-4 (within the range AdaMix uses for
  # RoBERTa-large adapters). Tune on your own held-out data, not on test.
  config.batch_size = 8
  config.eval_batch_size = 32
  config.num_train_steps = 1000
  config.learning_rate = 3e-4
  # Evaluate (and checkpoint) once, at the end: no dev set, no early stopping.
  config.eval_every_steps = config.num_train_steps
  config.checkpoint_every_steps = config.num_train_steps
  return config
