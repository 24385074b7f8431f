import sys

from infosam_core.cli import main

if __name__ == "__main__":  # Dask's worker processes (segment --scheduler local) re-import this module
    sys.exit(main())
