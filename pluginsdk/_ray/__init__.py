"""Running isolated plugins on a Ray cluster (``executor = "ray"``).

* :mod:`.settings`: ``[policy.ray]``, checked (standard library only: the
  policy imports it on every host start);
* :mod:`.cluster`: connecting to a cluster or starting a local one, and what
  an actor asks of it (resources, ``runtime_env``);
* :mod:`.actor`: the actor that runs one guest (a worker process, or a
  sandbox instance) on a node and relays its frames as bytes.

The host's side of each actor is :class:`pluginsdk.backends.ray_worker.RayWorker`.
Nothing here imports ``ray`` at module level except :mod:`.cluster`.
"""
