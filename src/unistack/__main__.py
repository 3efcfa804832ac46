import sys

from unistack.cli import main

sys.exit(main())
