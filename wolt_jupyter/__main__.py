import sys

from wolt_jupyter.cli import main

sys.exit(main())
