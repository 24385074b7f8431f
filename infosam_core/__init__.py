"""InfoSAM Studio core: SAM loading, prediction, PEFT, InfoSAM distillation, training, metrics, I/O.

No Qt here: everything is usable from Python and the `infosam` command line.

Importing this package first (before torch) sets ``OMP_WAIT_POLICY=PASSIVE`` unless it is set already: by
default OpenMP's worker threads spin between parallel regions, and on a machine whose cores are busy (a
training run beside the app, another program) a spinning worker takes the CPU the next operation needs --
segment-all with 2 torch threads on a busy 2-core machine ran 4-7x slower than with 1; passive waiting makes 2
threads cost no more than 1 there (``benchmarks/bench_threads.py`` measures both side by side). OpenMP reads
the variable once, when torch loads it: set it yourself (``OMP_WAIT_POLICY=ACTIVE``) to keep spinning.

It also registers segment-anything's package with its ``__init__`` deferred (:mod:`.segment_anything_import`):
the model classes import without torchvision, which costs 2.3 s of every command's start.
"""

import os

from infosam_core.segment_anything_import import defer_package_init

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
defer_package_init()

__version__ = "0.1.0"
