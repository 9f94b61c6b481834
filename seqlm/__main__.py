"""`python -m seqlm` behaves exactly like the `seqlm` console script."""

from seqlm.cli import main

if __name__ == "__main__":
    main()
