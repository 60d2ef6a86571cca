"""`python -m ipcd` runs the daemon, as the `ipcd` command does."""

from .daemon import main

if __name__ == "__main__":
    main()
