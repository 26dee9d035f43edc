"""``python -m hyperpop``: the command line."""

from hyperpop.cli import main

if __name__ == "__main__":
    main()
