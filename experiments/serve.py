"""Serve several exports of one base checkpoint over HTTP, one copy of the backbone for all.

  python -m experiments.serve --exports=sst2/export,rte/export [--port=8000] \
      [--host=127.0.0.1] [--batch_size=32] [--max_wait_ms=5]

  curl -s localhost:8000/predict -d '{"task": "sst2", "texts": ["a gripping film"]}'
  # Pair tasks take [text, text] per item; several tasks in one request:
  curl -s localhost:8000/predict -d '[{"task": "sst2", "texts": ["dull"]},
      {"task": "rte", "texts": [["A man sleeps.", "A person rests."]]}]'
  curl -s localhost:8000/tasks      # names, labels, methods, sizes
  curl -s localhost:8000/healthz

`POST /predict` answers {"task", "predictions", "probabilities"} per item (regression:
"predictions" are the scores), a list for a list. Requests of all clients are batched
together up to --batch_size rows or --max_wait_ms (`serving.RequestBatcher`); every length
bucket is compiled before the server starts, so load never recompiles. A bad request
(malformed JSON, an unknown task, a field of the wrong type, an empty or oversized text,
too many texts) gets a 4xx answer {"error": message}; the server keeps serving.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from absl import app, flags
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from adamix_jax import serving
from adamix_jax.data.formats import Example
from experiments import cli

FLAGS = flags.FLAGS
flags.DEFINE_list('exports', None, 'Export directories (WORKDIR/export of runs) of one base '
                  'checkpoint; each may be named NAME=DIR (default: its task).')
flags.DEFINE_string('host', '127.0.0.1', 'Address to listen on (0.0.0.0: every interface).')
flags.DEFINE_integer('port', 8000, 'Port to listen on.')
flags.DEFINE_integer('batch_size', 32, 'Rows per forward pass (requests are batched '
                     'together up to this many).')
flags.DEFINE_integer('bucket_size', 32, 'Batches are padded to a multiple of this length.')
flags.DEFINE_float('max_wait_ms', 5.0, 'How long a request waits for others to share its '
                   'forward pass.')
flags.DEFINE_integer('max_texts', 256, 'Most texts in one request.')
flags.DEFINE_integer('max_chars', 10_000, 'Longest text accepted, in characters (longer '
                     'inputs are truncated to the model length anyway).')
flags.DEFINE_string('base_checkpoint', None,
                    'The base checkpoint, if not where the exports say.')
flags.mark_flags_as_required(['exports'])


class BadRequest(ValueError):

  def __init__(self, message: str, status: int = 400):
    super().__init__(message)
    self.status = status


def parse_items(payload: Any, predictor: serving.MultiTaskPredictor, *, max_texts: int,
                max_chars: int) -> list[tuple[str, list[Example]]]:
  """(task, examples) per item of a request body; raises `BadRequest` naming the culprit."""
  items = payload if isinstance(payload, list) else [payload]
  if not items or not all(isinstance(i, dict) for i in items):
    raise BadRequest('the body must be {"task": NAME, "texts": [...]} or a non-empty list '
                     'of them')
  parsed, count = [], 0
  for k, item in enumerate(items):
    where = f'item {k}: ' if isinstance(payload, list) else ''
    unknown = sorted(set(item) - {'task', 'texts'})
    if unknown:
      raise BadRequest(f'{where}unknown field(s) {unknown}; expected "task" and "texts"')
    name, texts = item.get('task'), item.get('texts')
    if not isinstance(name, str):
      raise BadRequest(f'{where}"task" must be a task name (a string), got {name!r}')
    if name not in predictor.tasks:
      raise BadRequest(f'{where}unknown task {name!r}; serving: '
                       f'{", ".join(predictor.tasks)}', 404)
    if not isinstance(texts, list) or not texts:
      raise BadRequest(f'{where}"texts" must be a non-empty list, got {texts!r:.80}')
    columns = predictor.tasks[name].text_columns
    examples = []
    for j, text in enumerate(texts):
      parts = (text,) if len(columns) == 1 else text
      if (not isinstance(parts, (list, tuple)) or len(parts) != len(columns)
          or not all(isinstance(t, str) for t in parts)):
        shape = 'a string' if len(columns) == 1 else f'a list of {len(columns)} strings'
        raise BadRequest(f'{where}texts[{j}]: task {name!r} takes {shape} '
                         f'({", ".join(columns)}) per text, got {text!r:.80}')
      for t in parts:
        if not t.strip():
          raise BadRequest(f'{where}texts[{j}] is empty')
        if len(t) > max_chars:
          raise BadRequest(f'{where}texts[{j}] has {len(t)} characters; the limit is '
                           f'{max_chars}', 413)
      examples.append(Example(tuple(parts), 0))
    count += len(examples)
    if count > max_texts:
      raise BadRequest(f'the request holds more than {max_texts} texts; send fewer per '
                       'request', 413)
    parsed.append((name, examples))
  return parsed


def answer(task: serving.ServedTask, outputs: list[Any]) -> dict[str, Any]:
  if task.labels is None:
    return {'task': task.name, 'predictions': [float(o) for o in outputs]}
  return {'task': task.name,
          'predictions': [task.labels[int(o.argmax())] for o in outputs],
          'probabilities': [{l: float(p) for l, p in zip(task.labels, o)} for o in outputs]}


def make_app(predictor: serving.MultiTaskPredictor, batcher: serving.RequestBatcher, *,
             max_texts: int = 256, max_chars: int = 10_000) -> Starlette:
  """The ASGI application over a loaded predictor and its request batcher."""
  max_body = max_texts * (max_chars + 16) * 2 + 4096

  async def predict_route(request: Request) -> JSONResponse:
    body = await request.body()
    try:
      if len(body) > max_body:
        raise BadRequest(f'the body has {len(body)} bytes; the limit is {max_body}', 413)
      try:
        payload = json.loads(body)
      except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f'malformed JSON: {e}') from None
      parsed = parse_items(payload, predictor, max_texts=max_texts, max_chars=max_chars)
    except BadRequest as e:
      return JSONResponse({'error': str(e)}, status_code=e.status)
    rows = [(name, e) for name, examples in parsed for e in examples]
    outputs = await asyncio.wrap_future(batcher.submit(rows))
    answers, start = [], 0
    for name, examples in parsed:
      answers.append(answer(predictor.tasks[name], outputs[start:start + len(examples)]))
      start += len(examples)
    return JSONResponse(answers if isinstance(payload, list) else answers[0])

  async def tasks_route(_: Request) -> JSONResponse:
    return JSONResponse({'base_checkpoint': predictor.base,
                         'tasks': [t.describe() for t in predictor.tasks.values()]})

  async def health_route(_: Request) -> JSONResponse:
    return JSONResponse({'status': 'ok', 'tasks': len(predictor.tasks)})

  return Starlette(routes=[Route('/predict', predict_route, methods=['POST']),
                           Route('/tasks', tasks_route, methods=['GET']),
                           Route('/healthz', health_route, methods=['GET'])])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  import uvicorn  # pylint: disable=import-outside-toplevel
  predictor = serving.MultiTaskPredictor(serving.named_exports(FLAGS.exports),
                                         base_checkpoint=FLAGS.base_checkpoint,
                                         batch_size=FLAGS.batch_size,
                                         bucket_size=FLAGS.bucket_size).load()
  shapes = predictor.warm_up()
  batcher = serving.RequestBatcher(predictor, max_wait_s=FLAGS.max_wait_ms / 1000)
  print(f'Serving {len(predictor.tasks)} tasks ({", ".join(predictor.tasks)}) over '
        f'{predictor.base}, {shapes} compiled shapes, on http://{FLAGS.host}:{FLAGS.port}',
        flush=True)
  try:
    uvicorn.run(make_app(predictor, batcher, max_texts=FLAGS.max_texts,
                         max_chars=FLAGS.max_chars),
                host=FLAGS.host, port=FLAGS.port, log_level='warning')
  finally:
    batcher.close()


if __name__ == '__main__':
  cli.run(main, (serving.ServingError,))
