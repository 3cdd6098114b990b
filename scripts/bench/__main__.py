"""`python3 -m lama_deploy.scripts.bench`: the same as `lama-deploy bench`."""

import sys

from .command import main

sys.exit(main())
