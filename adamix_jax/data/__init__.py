"""Data: the task registry, the data sources and their readers, metrics and the batching
pipeline."""

from adamix_jax.data.config import default_data_config
from adamix_jax.data.metrics import accuracy
from adamix_jax.data.metrics import compute_metrics
from adamix_jax.data.metrics import f1
from adamix_jax.data.metrics import matthews_corrcoef
from adamix_jax.data.metrics import pearson
from adamix_jax.data.metrics import spearman
from adamix_jax.data.pipeline import bucket_length
from adamix_jax.data.pipeline import eval_batches
from adamix_jax.data.pipeline import load_tokenizer
from adamix_jax.data.pipeline import num_eval_batches
from adamix_jax.data.pipeline import shard_batch
from adamix_jax.data.pipeline import tokenize_examples
from adamix_jax.data.pipeline import TokenizedDataset
from adamix_jax.data.pipeline import TrainIterator
from adamix_jax.data.custom import read_custom
from adamix_jax.data.formats import DataError
from adamix_jax.data.formats import Example
from adamix_jax.data.glue import read_glue_tsv
from adamix_jax.data.glue import SAMPLES_DIR
from adamix_jax.data.sources import DataSource
from adamix_jax.data.sources import load_examples
from adamix_jax.data.sources import SOURCES
from adamix_jax.data.sources import task_from_config
from adamix_jax.data.tfds_glue import read_tfds
from adamix_jax.data.tasks import custom_task
from adamix_jax.data.tasks import get_task
from adamix_jax.data.tasks import register_task
from adamix_jax.data.tasks import TaskSpec
