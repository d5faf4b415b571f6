import sys

from edgeblur.cli import main

sys.exit(main())
