"""`python -m ipcd.ctl` runs ipcctl, as the `ipcctl` command does."""

from ipcd.ctl.cli import main

if __name__ == "__main__":
    main()
