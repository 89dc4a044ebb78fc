"""Ray Jobs entry point: `skr submit index ...` or `ray job submit --working-dir . -- python jobs/index.py [--config F] [key=value ...]`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the uploaded working_dir holds skr_ray/

from skr_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["index", *sys.argv[1:]]))
