"""The benchmark suite (needs a checkout: ``make bench`` or ``python -m benchmarks``).

By role: ``measure`` (timing, peak memory, machine), ``ceilings`` (each device's measured
limits), ``cost_model`` (FLOPs and bytes on paper), ``workers`` (one process per
implementation), ``report`` (tables and plots), ``__main__`` (the driver). Single-question
scripts beside them: ``check_memory`` (the main job's peak), ``gpu_profile``, ``gpu_precision``,
``verdict_parity``. Results: benchmarks/results/.
"""
