"""`python -m flashsrv` runs the command-line interface."""

from flashsrv.cli import main

if __name__ == "__main__":
    main()
