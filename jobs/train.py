"""Ray Jobs entry point: `skr submit train ...` or `ray job submit --working-dir . -- python jobs/train.py [--config F] [key=value ...]`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the uploaded working_dir holds skr_ray/

from skr_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
