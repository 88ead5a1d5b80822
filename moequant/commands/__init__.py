"""One module per command-line verb.

Each module defines `NAME` (the verb), `HELP`, `add_arguments(parser)` and `run(args) -> int`.
The CLI discovers them, so adding a verb never touches a shared file.
"""
