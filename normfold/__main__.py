"""``python -m normfold``: the console script's entry (signal handling included; see _normfold_cli.py)."""
import sys

from _normfold_cli import main

sys.exit(main())
