"""Imported once by the worker pool's fork server, before it forks any worker.

It loads the pipeline (numpy, scipy, the jobs) so that every worker shares
those pages, then moves every object loaded so far out of the garbage
collector's reach: a worker's collections would otherwise write to each
inherited object and copy its page (the tree's memory grew with the run).
"""

import gc

import hls.jobs  # noqa: F401

gc.freeze()
