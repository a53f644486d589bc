# A Dataflow worker image (--sdk_container_image): Beam's Python SDK image of the Beam version in
# requirements.lock, with this project's run-time requirements, crepe (its weights inside) and the
# project itself, installed by `tools/worker_packages.py install`: the pip commands Beam's SDK
# container runs for staged packages, the same code tests/pipelines/test_worker_env.py builds its
# workers' environment with. tests/test_worker_packages.py checks this file against the lock.
#
#   make worker-packages                                   # -> dist/worker
#   docker build -f tools/worker.Dockerfile -t IMAGE .     # from the checkout's root
#
# Not built on the development machine (no Docker daemon there); see docs/scale.md.
FROM apache/beam_python3.11_sdk:2.78.0

COPY tools/worker_packages.py /opt/ddsp/worker_packages.py
COPY dist/worker/ /opt/ddsp/packages/
RUN python /opt/ddsp/worker_packages.py install /opt/ddsp/packages \
    && python -m pip check \
    && ddsp-prepare --help > /dev/null && ddsp-sweep --help > /dev/null
