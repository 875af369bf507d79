"""``python -m glotta`` (and so ``torchrun -m glotta ...``) runs the CLI."""

from glotta.cli import main

if __name__ == "__main__":
    main()
