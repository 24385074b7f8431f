"""`python -m infosam_app [...]` = `infosam app [...]`."""

import sys

from infosam_app.cli import main

sys.exit(main())
