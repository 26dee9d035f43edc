"""See the population: a live web dashboard, a static HTML report and plotly figures.

Needs the ``dashboard`` extra (``pip install 'hyperpop[dashboard]'``). It reads the store only,
never the controller or the backends, and never writes.
"""

from __future__ import annotations

from hyperpop.dashboard.data import RunView, StoreSource

__all__ = ["RunView", "StoreSource"]
