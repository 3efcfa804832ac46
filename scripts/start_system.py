#!/usr/bin/env python3
"""The unistack health hub: supervisord runs this as the `hub` program.

It builds every component from Settings, starts the other services in dependency
order once their dependencies are ready, probes them and serves the hub API.
"""

import sys

from unistack.hub.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
