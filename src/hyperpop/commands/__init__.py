"""Optional subcommands of the ``hyperpop`` command line, one module each."""
