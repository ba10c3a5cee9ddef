"""Benchmarks that measure the orchestrator against its baselines, side by side in one run.

``python -m bench`` runs every figure (B1..B12, B17, B18) and prints one table: what was
measured, the baseline measured in the same run (bare asyncio, batch mode, the critical path, a
plain writer, ``python -c pass``...), their ratio, the goal and whether it was met. Ratios, not
absolute times, are the point: the machine is shared and noisy, so each figure is repeated and
reported as the median with its min-max. ``--quick`` is the CI smoke run (smaller sizes, one
repeat, no assertions on time); ``--json`` prints one object keyed by figure id; ``--markdown``
prints the README's performance table; ``--from FILE`` renders a run saved with ``--json``
again (as text, or with ``--markdown``) without measuring anything.

Modules: `core` (results, statistics, timers, loop-lag probe), `workloads` (seeded DAGs and
the harness that runs a plan in-process or on bare asyncio), then one module per figure or
small group of figures, and `table` (text, markdown and JSON output).
"""
