"""Event sources: one module per kind (``files``, ``objects``, ``clock``), each with ``scan()``
and ``run(task_status=...)``. Nothing is imported here: the runners' loaders reuse the file
scan without pulling in watchdog or the engine."""
