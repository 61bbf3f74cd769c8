"""``python -m sparsekit`` (also what ``torchrun -m sparsekit`` runs)."""

from sparsekit.cli.main import main

main()
