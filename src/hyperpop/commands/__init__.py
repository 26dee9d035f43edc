"""The commands of the ``hyperpop`` command line, by topic; :mod:`hyperpop.cli` lists them."""
