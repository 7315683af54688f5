"""`python -m drivelab.cli`: the same as the `drivelab` command."""

from drivelab.cli import main

main()
