"""The measures behind scripts/check_*.py, as functions a notebook can call; the scripts parse options
and print."""
