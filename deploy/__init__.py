"""The local deployment of ``make run``: the process list (``Procfile``, run by honcho), the scheduler of
the periodic jobs and the Prometheus configuration. Imports only :mod:`gpu_core`; jobs run as ``jaikod``
processes."""
