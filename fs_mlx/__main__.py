"""`python -m fs_mlx ...` is `fsx ...`."""

from .apps.cli import main

main()
