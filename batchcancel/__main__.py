"""``python -m batchcancel`` and the ``batchcancel`` command."""

import sys


def run() -> None:
    """Start the CLI; Ctrl-C while it is still starting is a clean exit."""
    try:
        from batchcancel.cli import main

        # The name people type, also when started as ``python -m batchcancel``.
        main(prog_name="batchcancel")
    except KeyboardInterrupt:
        sys.stderr.write("Error: interrupted\n")
        sys.exit(130)


if __name__ == "__main__":
    run()
