import sys

from dgaas_flow.cli import main

sys.exit(main())
