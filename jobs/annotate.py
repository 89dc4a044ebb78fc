"""Ray Jobs entry point: `ray job submit --working-dir . -- python jobs/annotate.py [--config F] [key=value ...]`."""

import sys

from skr_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["annotate", *sys.argv[1:]]))
