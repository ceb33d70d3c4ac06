"""``python -m headdb``: the ``headdb`` command, where the environment's scripts folder is not on PATH."""

from headdb.cli import main

if __name__ == "__main__":
    main()
