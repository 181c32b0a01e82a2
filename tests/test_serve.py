"""The HTTP server (experiments.serve) on loopback and the several-export predict command:
answers equal to the offline predictions under concurrent mixed-task load, bad requests
answered 4xx while the server keeps serving, no recompilation under load."""

from __future__ import annotations

import concurrent.futures
import csv
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from adamix_jax import serving
from adamix_jax.data.formats import Example
from serving_exports import examples_for, sentences, write_exports

ROOT = Path(__file__).resolve().parents[1]
TASKS = ('sentiment', 'topic', 'score', 'nli', 'prompted')


@pytest.fixture(scope='module')
def exports(tiny_mlm_checkpoint, tmp_path_factory) -> dict[str, Path]:
  return write_exports(tmp_path_factory.mktemp('serve'), tiny_mlm_checkpoint, TASKS)


@pytest.fixture(scope='module')
def server(exports):
  """(base URL, predictor) of a server on 127.0.0.1 at a free port, stopped at the end."""
  import uvicorn  # pylint: disable=import-outside-toplevel
  from experiments import serve  # pylint: disable=import-outside-toplevel
  predictor = serving.MultiTaskPredictor(exports, batch_size=8, bucket_size=8).load()
  predictor.warm_up()
  batcher = serving.RequestBatcher(predictor, max_wait_s=0.01)
  sock = socket.socket()
  sock.bind(('127.0.0.1', 0))
  config = uvicorn.Config(serve.make_app(predictor, batcher, max_texts=16, max_chars=500),
                          log_level='warning')
  uv = uvicorn.Server(config)
  thread = threading.Thread(target=uv.run, kwargs={'sockets': [sock]}, daemon=True)
  thread.start()
  deadline = time.monotonic() + 30
  while not uv.started:
    assert time.monotonic() < deadline and thread.is_alive(), 'the server did not start'
    time.sleep(0.05)
  yield f'http://127.0.0.1:{sock.getsockname()[1]}', predictor
  uv.should_exit = True
  thread.join(timeout=10)
  batcher.close()


def call(url: str, body: bytes | None = None) -> tuple[int, object]:
  request = urllib.request.Request(url, data=body, method='GET' if body is None else 'POST',
                                   headers={'Content-Type': 'application/json'})
  try:
    with urllib.request.urlopen(request, timeout=60) as response:
      return response.status, json.loads(response.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def request_texts(name: str, n: int, offset: int) -> list:
  return [list(e.texts) if len(e.texts) == 2 else e.texts[0]
          for e in examples_for(name, n, offset)]


def test_health_and_tasks(server):
  url, _ = server
  assert call(url + '/healthz') == (200, {'status': 'ok', 'tasks': len(TASKS)})
  status, body = call(url + '/tasks')
  assert status == 200
  tasks = {t['name']: t for t in body['tasks']}
  assert set(tasks) == set(TASKS)
  assert tasks['topic']['labels'] == ['a', 'b', 'c'] and tasks['topic']['method'] == 'adamix'
  assert tasks['score']['regression'] and tasks['nli']['text_columns'] == ['premise',
                                                                          'hypothesis']
  assert all(t['size_bytes'] > 0 for t in tasks.values())


BAD_REQUESTS = [
    (b'{"task": "sentiment", "texts": ["ok"', 400, 'malformed JSON'),
    (b'\xff\xfe', 400, 'malformed JSON'),
    (b'[]', 400, 'non-empty list'),
    (b'"sentiment"', 400, 'the body must be'),
    (json.dumps({'task': 'nope', 'texts': ['a']}).encode(), 404, "unknown task 'nope'"),
    (json.dumps({'task': 3, 'texts': ['a']}).encode(), 400, '"task" must be'),
    (json.dumps({'task': 'sentiment', 'texts': 'a'}).encode(), 400, '"texts" must be'),
    (json.dumps({'task': 'sentiment', 'texts': []}).encode(), 400, '"texts" must be'),
    (json.dumps({'task': 'sentiment', 'texts': [3]}).encode(), 400, 'takes a string'),
    (json.dumps({'task': 'nli', 'texts': ['one text']}).encode(), 400,
     'takes a list of 2 strings'),
    (json.dumps({'task': 'sentiment', 'texts': ['  ']}).encode(), 400, 'texts[0] is empty'),
    (json.dumps({'task': 'sentiment', 'texts': ['x' * 501]}).encode(), 413, '501 characters'),
    (json.dumps({'task': 'sentiment', 'texts': ['a'] * 17}).encode(), 413, 'more than 16'),
    (json.dumps([{'task': 'sentiment', 'texts': ['a']},
                 {'task': 'topic', 'text': ['a']}]).encode(), 400, "item 1: unknown field"),
]


@pytest.mark.parametrize('body,status,message', BAD_REQUESTS)
def test_a_bad_request_is_answered_4xx_and_the_server_keeps_serving(server, body, status,
                                                                    message):
  url, _ = server
  got_status, got = call(url + '/predict', body)
  assert got_status == status and message in got['error'], got
  ok_status, ok = call(url + '/predict', json.dumps({'task': 'topic',
                                                     'texts': ['fine']}).encode())
  assert ok_status == 200 and ok['predictions'][0] in ('a', 'b', 'c')


def test_concurrent_clients_mixing_tasks_get_the_offline_predictions(server):
  url, predictor = server
  compiled = predictor.compiled_shapes()
  # 8 clients x 4 requests, each request one or two tasks of 1-3 texts.
  requests = []
  for client in range(8):
    for r in range(4):
      k = client * 4 + r
      first, second = TASKS[k % len(TASKS)], TASKS[(k + 2) % len(TASKS)]
      body = [{'task': first, 'texts': request_texts(first, 1 + k % 3, k)}]
      if r % 2:
        body.append({'task': second, 'texts': request_texts(second, 2, k + 7)})
      requests.append(body)

  def client(bodies):
    return [call(url + '/predict', json.dumps(b).encode()) for b in bodies]

  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    answers = [a for chunk in pool.map(client, [requests[i::8] for i in range(8)])
               for a in chunk]
  bodies = [b for i in range(8) for b in requests[i::8]]
  for body, (status, got) in zip(bodies, answers):
    assert status == 200, got
    for item, result in zip(body, got):
      task = predictor.tasks[item['task']]
      examples = [Example(tuple(t) if isinstance(t, list) else (t,), 0)
                  for t in item['texts']]
      offline = predictor.predict(item['task'], examples)
      assert result['task'] == item['task']
      if task.labels is None:
        np.testing.assert_allclose(result['predictions'], offline, atol=1e-6)
      else:
        probs = [[p[l] for l in task.labels] for p in result['probabilities']]
        np.testing.assert_allclose(probs, offline, atol=1e-6)
        assert result['predictions'] == [task.labels[i] for i in offline.argmax(-1)]
  assert predictor.compiled_shapes() == compiled  # no recompilation under load


def test_predict_command_with_several_exports(exports, tmp_path):
  inputs = {}
  for name in ('sentiment', 'nli', 'score'):
    inputs[name] = tmp_path / f'{name}.tsv'
    columns = ('premise', 'hypothesis') if name == 'nli' else ('sentence',)
    texts = sentences(6, 2)
    with open(inputs[name], 'w', newline='') as f:
      writer = csv.writer(f, delimiter='\t', lineterminator='\n')
      writer.writerow(columns)
      writer.writerows([texts[i], texts[i + 1]][:len(columns)] for i in range(5))
  outputs = {name: tmp_path / f'{name}_pred.jsonl' for name in inputs}
  run = subprocess.run(
      [sys.executable, '-m', 'experiments.predict',
       '--export=' + ','.join(f'{n}={exports[n]}' for n in inputs),
       '--input=' + ','.join(map(str, inputs.values())),
       '--output=' + ','.join(map(str, outputs.values())), '--batch_size=8',
       '--bucket_size=8'], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr
  offline = serving.MultiTaskPredictor({n: exports[n] for n in inputs}, batch_size=8,
                                       bucket_size=8).predict_files(inputs)
  for name, path in outputs.items():
    rows = [json.loads(l) for l in path.read_text().splitlines()]
    assert [r['prediction'] for r in rows] == offline[name].predictions
  # A count mismatch is one line naming the flags.
  bad = subprocess.run(
      [sys.executable, '-m', 'experiments.predict',
       f'--export={exports["sentiment"]},{exports["nli"]}', f'--input={inputs["nli"]}',
       f'--output={tmp_path / "x.tsv"}'], cwd=ROOT, capture_output=True, text=True,
      timeout=300)
  assert bad.returncode == 1 and bad.stderr.strip().startswith('error: 2 export(s) need'), (
      bad.stderr)
