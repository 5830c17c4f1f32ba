"""Benchmarks of batchcancel, run with ``python -m bench`` (issue 6).

Each figure is measured next to its comparison in the same run: the client
against a plain aiohttp loop and ``xargs -P 64 curl``, the pace against what
the sandbox counted, the schedule against the best one possible. The sandbox
always runs in its own process, so the client's CPU and memory are its own.
Benchmarks are not tests: nothing here asserts a speed.
"""
