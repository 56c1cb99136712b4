"""ATOM-GPT: train small GPT models on metal lyrics and dark verse, then sample and chat.

Every stage of the pipeline is one function here; notebooks and the `atom` CLI only call them.
"""

__version__ = "0.1.0"

import os as _os

# How long an idle OpenMP thread (GNU libgomp, PyTorch's on Linux) spins before it sleeps. The
# default (300,000 spins) made a small model's training step several times slower when another
# process held one of 2 cores; never spinning (OMP_WAIT_POLICY=PASSIVE) made it slower on an
# idle machine, as every one of a step's many small parallel regions then waits for a wake-up.
# A short spin is as fast as spinning when idle; on a busy machine the trainer and the decode
# loop fall back to one thread (device.ThreadChoice). The README's step-time table measures it.
# It only takes effect when atomlib is imported before torch; set the variable yourself to
# override it.
_os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from atomlib.errors import AtomError  # noqa: F401  (re-exported: the one error type users catch)
