"""ATOM-GPT: train small GPT models on metal lyrics and dark verse, then sample and chat.

Every stage of the pipeline is one function here; notebooks and the `atom` CLI only call them.
"""

__version__ = "0.1.0"

from atomlib.errors import AtomError  # noqa: F401  (re-exported: the one error type users catch)
