"""``python -m tinydiff`` runs the command line (and lets ``torchrun -m tinydiff`` launch it)."""

from .cli import main

if __name__ == "__main__":
    main()
