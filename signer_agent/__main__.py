import sys

from signer_agent.cli import main

sys.exit(main())
