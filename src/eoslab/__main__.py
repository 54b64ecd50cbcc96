"""``python -m eoslab``: the ``eoslab`` command (the same entry point as the console script)."""

from eoslab.cli import main

if __name__ == "__main__":
    main()
