"""Regenerates the bundled GLUE and few-shot samples from ../shared/data (README.md).

    python adamix_jax/data/samples/make_samples.py /path/to/shared/data

Rows are copied byte for byte; a sample of k rows is
`sorted(numpy.random.default_rng(0).choice(num_rows, k, replace=False))`, kept in
file order, with the header (if any) first and the source's final-newline habit.
The MNLI dev files are hand-made (see `MNLI_DEV`), written by this script too.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / 'glue'
FEWSHOT_OUT = Path(__file__).resolve().parent / 'few-shot-list'
SEED = 0
SST2_TRAIN_ROWS = 8000
SMALL_ROWS = 40

# (task dir, output file, source relative to shared/data, rows or None = all,
#  whether the source has a header line)
PLAN = (
    ('SST-2', 'train.tsv', 'glue/SST-2/train.tsv', SST2_TRAIN_ROWS, True),
    ('SST-2', 'dev.tsv', 'glue/SST-2/dev.tsv', None, True),
    ('RTE', 'train.tsv', 'glue/RTE/train.tsv', SMALL_ROWS, True),
    ('RTE', 'dev.tsv', 'glue/RTE/dev.tsv', SMALL_ROWS, True),
    ('MRPC', 'train.tsv', 'glue/MRPC/train.tsv', SMALL_ROWS, True),
    ('MRPC', 'dev.tsv', 'glue/MRPC/dev.tsv', SMALL_ROWS, True),
    # Only dev is in shared/glue for these; their train samples are LM-BFF's
    # k-shot rows, which were drawn from the GLUE *train* files (no dev overlap).
    ('QNLI', 'train.tsv', 'k-shot/QNLI/16-13/train.tsv', None, True),
    ('QNLI', 'dev.tsv', 'glue/QNLI/dev.tsv', SMALL_ROWS, True),
    ('CoLA', 'train.tsv', 'k-shot/CoLA/16-13/train.tsv', None, False),
    ('CoLA', 'dev.tsv', 'glue/CoLA/dev.tsv', SMALL_ROWS, False),
    ('STS-B', 'train.tsv', 'k-shot/STS-B/16-13/train.tsv', None, True),
    ('STS-B', 'dev.tsv', 'glue/STS-B/dev.tsv', SMALL_ROWS, True),
    # No QQP/MNLI GLUE files in shared; LM-BFF's k-shot train and dev rows (both
    # drawn from the GLUE train files, disjoint) are real rows in GLUE layout.
    ('QQP', 'train.tsv', 'k-shot/QQP/16-13/train.tsv', None, True),
    ('QQP', 'dev.tsv', 'k-shot/QQP/16-13/dev.tsv', None, True),
    ('MNLI', 'train.tsv', 'k-shot/MNLI/16-13/train.tsv', None, True),
)
# The LiST few-shot splits (few-shot-list/<task>/<K>-<seed>/train): every K=30
# train file complete, and a sample of each test file there is:
# (task dir, test file, rows, header).
FEWSHOT_TASKS = ('MNLI', 'QQP', 'RTE', 'SST-2', 'mpqa', 'subj')
FEWSHOT_K, FEWSHOT_SEEDS = 30, (1, 2, 3, 4, 5)
FEWSHOT_TEST_ROWS = 100
FEWSHOT_TESTS = (
    ('RTE', 'test.tsv', True),
    ('SST-2', 'test.tsv', True),
    ('mpqa', 'test.csv', False),
    ('subj', 'test.csv', False),
)
LICENCES = (
    ('MRPC', 'glue/MRPC/Microsoft_Shared_Source_License.htm'),
    ('STS-B', 'glue/STS-B/LICENSE.txt'),
)

MNLI_DEV_HEADER = ('index', 'promptID', 'pairID', 'genre',
                   'sentence1_binary_parse', 'sentence2_binary_parse',
                   'sentence1_parse', 'sentence2_parse', 'sentence1',
                   'sentence2', 'label1', 'label2', 'label3', 'label4',
                   'label5', 'gold_label')
_E, _N, _C = 'entailment', 'neutral', 'contradiction'
# Hand-written pairs: (genre, premise, hypothesis, five annotator labels); the
# gold label is the majority, as in MNLI. Matched genres are MNLI's training
# genres, mismatched ones are not.
MNLI_DEV = {
    'dev_matched.tsv': (
        ('fiction', 'The old man closed the door and sat down by the fire.',
         'The man sat near the fire.', (_E, _E, _E, _E, _N)),
        ('fiction', 'She ran to the station but the train had already left.',
         'She caught the train easily.', (_C, _C, _C, _C, _C)),
        ('fiction', 'The children played in the garden all afternoon.',
         'The children were happy.', (_N, _N, _E, _N, _N)),
        ('government', 'The agency published its annual report in March.',
         'The report came out in the spring.', (_E, _E, _N, _E, _E)),
        ('government', 'The new rule applies only to small businesses.',
         'Large firms must follow the new rule.', (_C, _C, _C, _N, _C)),
        ('government', 'Funding for the program was increased last year.',
         'The program will hire more staff.', (_N, _N, _N, _N, _E)),
        ('slate', 'Critics praised the film for its sharp dialogue.',
         'The film was well received by critics.', (_E, _E, _E, _E, _E)),
        ('slate', 'The senator declined to comment on the rumors.',
         'The senator gave a long interview about the rumors.',
         (_C, _C, _C, _C, _N)),
        ('telephone', "yeah we usually go camping up in the mountains",
         'They go camping in the mountains.', (_E, _E, _E, _N, _E)),
        ('telephone', "i don't really watch much television anymore",
         'They watch television every night.', (_C, _C, _C, _C, _C)),
        ('travel', 'The museum is open every day except Monday.',
         'You can visit the museum on Tuesday.', (_E, _E, _E, _E, _N)),
        ('travel', 'The beach is a short walk from the old town.',
         'The beach is crowded in summer.', (_N, _N, _N, _C, _N)),
    ),
    'dev_mismatched.tsv': (
        ('facetoface', 'We moved to the city when I was about ten.',
         'They lived in the city as a child.', (_E, _E, _N, _E, _E)),
        ('facetoface', 'My brother never learned how to drive.',
         'Her brother drives a taxi.', (_C, _C, _C, _C, _C)),
        ('letters', 'Your gift will help us buy books for the library.',
         'The library needs money for books.', (_E, _N, _E, _E, _E)),
        ('letters', 'Thank you for supporting our school last year.',
         'The school will open a new building.', (_N, _N, _N, _N, _C)),
        ('nineeleven', 'The flight departed on time from Boston.',
         'The flight was delayed for hours.', (_C, _C, _C, _N, _C)),
        ('nineeleven', 'Officials met twice during the following week.',
         'Officials held meetings.', (_E, _E, _E, _E, _E)),
        ('oup', 'Wool was the most important export of the region.',
         'The region exported wool.', (_E, _E, _E, _E, _E)),
        ('oup', 'The craft declined after cheaper cloth arrived.',
         'The craft became more popular than ever.', (_C, _C, _N, _C, _C)),
        ('verbatim', 'The word comes from an old sailing term.',
         'Sailors once used the word.', (_E, _N, _E, _E, _N)),
        ('verbatim', 'Some readers wrote in to disagree with the column.',
         'Every reader agreed with the column.', (_C, _C, _C, _C, _C)),
        ('verbatim', 'Spelling rules changed slowly over many years.',
         'Dictionaries played a part in the change.', (_N, _N, _N, _E, _N)),
        ('letters', 'Please return the enclosed card by Friday.',
         'A card was enclosed.', (_E, _E, _E, _E, _E)),
    ),
}


def sample_lines(lines: list[str], k: int | None, seed: int = SEED) -> list[str]:
  """k of `lines` drawn without replacement with `seed`, in their file order."""
  if k is None or k >= len(lines):
    return list(lines)
  picks = np.random.default_rng(seed).choice(len(lines), k, replace=False)
  return [lines[i] for i in sorted(picks)]


def sample_file(text: str, k: int | None, header: bool) -> str:
  """The sample of a GLUE file's text (header kept, final newline as source)."""
  final_newline = text.endswith('\n')
  lines = text.split('\n')
  if final_newline:
    lines.pop()
  head, rows = (lines[:1], lines[1:]) if header else ([], lines)
  out = '\n'.join(head + sample_lines(rows, k))
  return out + '\n' if final_newline else out


def _tokens(sentence: str) -> list[str]:
  return sentence.replace('.', ' .').replace(',', ' ,').replace(
      "n't", " n't").split()


def _binary_parse(tokens: list[str]) -> str:
  # Right-branching placeholder in MNLI's bracket format (not parser output).
  if len(tokens) == 1:
    return tokens[0]
  return f'( {tokens[0]} {_binary_parse(tokens[1:])} )'


def _parse(tokens: list[str]) -> str:
  return '(ROOT (S ' + ' '.join(f'(X {t})' for t in tokens) + '))'


def mnli_dev_text(rows) -> str:
  lines = ['\t'.join(MNLI_DEV_HEADER)]
  for i, (genre, premise, hypothesis, labels) in enumerate(rows):
    gold = max(set(labels), key=labels.count)
    p, h = _tokens(premise), _tokens(hypothesis)
    prompt = 900000 + i
    lines.append('\t'.join((str(i), str(prompt), f'{prompt}{gold[0]}', genre,
                            _binary_parse(p), _binary_parse(h), _parse(p),
                            _parse(h), premise, hypothesis, *labels, gold)))
  return '\n'.join(lines) + '\n'


def main_fewshot(shared: Path) -> None:
  source = shared / 'few-shot-list'
  for task in FEWSHOT_TASKS:
    for seed in FEWSHOT_SEEDS:
      folder = f'{task}/{FEWSHOT_K}-{seed}'
      (FEWSHOT_OUT / folder).mkdir(parents=True, exist_ok=True)
      for path in (source / folder).iterdir():  # train.tsv or train.csv
        shutil.copyfile(path, FEWSHOT_OUT / folder / path.name)
  for task, name, header in FEWSHOT_TESTS:
    text = (source / task / name).read_bytes().decode('utf-8')
    (FEWSHOT_OUT / task / name).write_bytes(
        sample_file(text, FEWSHOT_TEST_ROWS, header).encode('utf-8'))


def main(shared: Path) -> None:
  for task, name, source, k, header in PLAN:
    (OUT / task).mkdir(parents=True, exist_ok=True)
    text = (shared / source).read_bytes().decode('utf-8')  # BOM kept as is
    (OUT / task / name).write_bytes(sample_file(text, k, header).encode('utf-8'))
  for task, source in LICENCES:
    shutil.copyfile(shared / source, OUT / task / Path(source).name)
  (OUT / 'MNLI').mkdir(parents=True, exist_ok=True)
  for name, rows in MNLI_DEV.items():
    (OUT / 'MNLI' / name).write_text(mnli_dev_text(rows), encoding='utf-8')
  main_fewshot(shared)


if __name__ == '__main__':
  main(Path(sys.argv[1]))
