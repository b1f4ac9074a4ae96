"""`python -m simulators`: see simulators.run."""

import sys

from simulators.run import main

sys.exit(main())
