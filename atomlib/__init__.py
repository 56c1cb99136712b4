"""ATOM-GPT: train small GPT models on metal lyrics and dark verse, then sample and chat.

Every stage of the pipeline is one function here; notebooks and the `atom` CLI only call them.
"""

__version__ = "0.1.0"

import os as _os

# OpenMP threads that busy-wait steal the few cores a laptop or CI box has from each other
# (measured: the cpu config fell from 16k to 2-4k tokens/s on 2 loaded cores). Passive waiting
# costs nothing measurable on an idle machine. It only takes effect before torch is imported.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from atomlib.errors import AtomError  # noqa: F401  (re-exported: the one error type users catch)
