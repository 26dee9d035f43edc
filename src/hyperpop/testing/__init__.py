"""Contract tests for your own :class:`~hyperpop.store.base.Store` or
:class:`~hyperpop.backends.base.Backend`: subclass the suite, say how to build one, and pytest
runs every check that hyperpop's own stores and backends pass.

.. code-block:: python

    from hyperpop.testing import BackendContract

    class TestMyBackend(BackendContract):
        def make_backend(self, workers):
            return MyBackend(workers)

This module needs pytest (``pip install 'hyperpop[test]'``); the library itself never imports it.
"""

from __future__ import annotations

from hyperpop.testing.backend import BackendContract
from hyperpop.testing.store import StoreContract
from hyperpop.testing.trainables import Climber

__all__ = ["BackendContract", "Climber", "StoreContract"]
