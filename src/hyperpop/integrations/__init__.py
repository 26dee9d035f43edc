"""Adapters that PBT-train the models of other training stacks under hyperpop.

* :mod:`hyperpop.integrations.lightning`: a PyTorch Lightning ``LightningModule`` with its
  ``Trainer`` (``pip install "hyperpop[lightning]"``);
* :mod:`hyperpop.integrations.transformers`: a Hugging Face ``transformers.Trainer``
  (``pip install "hyperpop[transformers]"``).

Each is a :class:`hyperpop.Trainable`: one ``train()`` call is one interval (N optimiser steps or
epochs), ``save``/``load`` carry the weights, optimiser and learning-rate scheduler state, and
``apply`` writes explored hyperparameters into the live optimiser and scheduler after every load,
so a restored checkpoint never brings back a donor's old learning rate (ray#62173). Nothing here
is imported by hyperpop's core; importing a submodule imports its framework.
"""

from __future__ import annotations
