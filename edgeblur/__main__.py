import sys

# Before anything else is imported: a stop signal during start-up must stop start-up.
from edgeblur import stopping

stopping.install()


def run() -> int:
    try:
        from edgeblur.cli import main  # seconds of imports: a signal may land in them

        return main()
    except stopping.Interrupted as exc:
        print(f"edgeblur: interrupted ({exc}) while starting.", file=sys.stderr)
        return exc.exit_code


code = run()
stopping.ignore()  # on the way out now; a late signal must not print a traceback
sys.exit(code)
