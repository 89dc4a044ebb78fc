"""Ray Jobs entry point: `ray job submit --working-dir . -- python jobs/train.py [--config F] [key=value ...]`."""

import sys

from skr_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
