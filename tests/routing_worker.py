"""The routed forward and backward of a tiny AdaMix model, data-parallel over n devices.

Run as a script (`python routing_worker.py N OUT.npz`) it sets N fake CPU devices before jax
is imported and saves the results; `test_routing` compares them with a 1-device run.
"""

from __future__ import annotations

import os
import sys

if __name__ == '__main__':
  os.environ['XLA_FLAGS'] = ' '.join([os.environ.get('XLA_FLAGS', ''),
                                       f'--xla_force_host_platform_device_count={int(sys.argv[1])}'])

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

from adamix_jax import routing  # noqa: E402
from adamix_jax.adapters import AdaptationConfig  # noqa: E402

E, LAYERS, STEPS = 4, 2, 5
CELLS = [(l, s, p) for l in range(LAYERS) for s in ('attention', 'ffn') for p in ('down', 'up')]


def routed_outputs(num_devices: int) -> dict[str, np.ndarray]:
  """Logits, the experts the model used and the experts the router drew, for 5 steps."""
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  from tiny_models import batch, make  # pylint: disable=import-outside-toplevel

  adaptation = AdaptationConfig(kind='adamix', adapter_size=4, num_experts=E,
                                placement='houlsby', share_up=False)
  model, params = make(adaptation)
  b = batch(size=16)
  mesh = Mesh(np.array(jax.devices()[:num_devices]), ('data',))
  data, replicated = NamedSharding(mesh, P('data')), NamedSharding(mesh, P())
  seed_key = jax.random.PRNGKey(42)

  @jax.jit
  def routed_step(params, ids, mask, step):
    r = routing.Routing(key=jax.random.fold_in(seed_key, step))
    logits = model.apply({'params': params}, ids, mask, routing=r)
    grads = jax.grad(lambda p: model.apply({'params': p}, ids, mask, routing=r).sum())(params)

    def adapter(layer, site):
      node = grads['backbone'][f'layer_{layer}']
      return (node['attention']['output'] if site == 'attention' else node['output'])['adapter']

    # The experts the sharded model actually used: the ones with a non-zero gradient.
    used = jnp.stack([jnp.argmax(jnp.abs(adapter(l, s)[f'{p}_kernel']).sum((1, 2)))
                      for l, s, p in CELLS])
    drawn = jnp.stack([routing.expert_index(r, E, layer=l, site=s, projection=p)
                       for l, s, p in CELLS])
    return logits, used, drawn

  params = jax.device_put(params, replicated)
  ids = jax.device_put(b['input_ids'], data)
  mask = jax.device_put(b['attention_mask'], data)
  results = {}
  for step in range(STEPS):
    logits, used, drawn = routed_step(params, ids, mask, step)
    assert len(logits.sharding.device_set) == num_devices
    results.update({f'logits_{step}': np.asarray(logits), f'used_{step}': np.asarray(used),
                    f'drawn_{step}': np.asarray(drawn)})
  return results


if __name__ == '__main__':
  n = int(sys.argv[1])
  assert jax.device_count() == n, jax.devices()
  np.savez(sys.argv[2], **routed_outputs(n))
