"""The guest side: what runs inside a worker process or a sandbox instance, serving one plugin.

Nothing in this package imports the host side (hosts, discovery, backends,
policy) or a host-only dependency; ``tests/test_import_rules.py`` checks it
with everything else blocked.  The host imports only :mod:`.protocol` from
here.  This folder, plus the package root's :data:`SHARED_MODULES`, is what
the sandbox is given of pluginsdk (see :mod:`pluginsdk._wasm.cache`).

* :mod:`.protocol`: message kinds, error kinds, HELLO and READY fields, and
  the checks every frame from a guest must pass.
* :mod:`.impls`: importing the plugin and matching its implementations to the spec.
* :mod:`.loop`: the request loop, over any ``read(n)``/``write(b)`` pair.
* :mod:`.worker`: a worker process's entry point (limits, descendants, pipes).
* :mod:`.sandbox` and :mod:`.fastcodec`: the sandbox's main program and its codec.
"""

#: Modules of the package root the guest shares with the host (guest-safe by contract).
SHARED_MODULES = ("__init__.py", "_markers.py", "_errors.py", "codec.py", "_structure.py", "_values.py")
