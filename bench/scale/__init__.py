"""Performance at the paper's model shapes: timings, FLOP floors, memory and full-model projections.

`python -m bench.scale.run --help` is the entry point; docs/performance.md explains the
method and bench/RESULTS.md holds the figures with the commands that produced them.
"""
