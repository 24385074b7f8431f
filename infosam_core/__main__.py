import sys

from infosam_core.cli import main

sys.exit(main())
