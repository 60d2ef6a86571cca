"""`python -m ipcd` runs the daemon, as the `ipcd` command does."""

from ipcd.daemon.command import main

if __name__ == "__main__":
    main()
