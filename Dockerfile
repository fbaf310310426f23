# fedchain node image: CPU-only PyTorch, non-root, `fedchain` as the entry point.
#
#   docker build -t fedchain:latest .                                  # python:3.11-slim base
#   docker build --build-arg BASE_IMAGE=fedchain-base:bookworm -t fedchain:latest .
#
# The second form needs no container registry: scripts/make_base_image.sh builds that
# base from Debian's apt mirror. Both bases provide `python3` (3.11) with the venv module.
#
# Two stages so that what the build needs (pip, local wheels, an optional CA bundle)
# never reaches the final image, which holds only the base, the virtualenv and the user.
# Plain multi-stage (no BuildKit features) because docker-compose v1 builds with the
# classic builder.
#
# Optional, machine-specific inputs read from the build context (both gitignored):
#   docker/wheels/*.whl     wheels to prefer (e.g. a local CPU torch wheel: no download)
#   docker/certs/*.crt      a CA bundle for pip's HTTPS (behind a TLS-intercepting proxy)
# scripts/compose_e2e.sh fills them when the host has them; normal builds leave them empty.

ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
# CPU-only torch: PyPI's Linux `torch` is a multi-GB CUDA build, never wanted here.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_SPEC="torch>=2.2,<3"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
COPY docker/wheels/ /tmp/wheels/
COPY docker/certs/ /tmp/certs/
RUN set -eu; \
    for f in /tmp/certs/*.crt; do if [ -f "$f" ]; then export PIP_CERT="$f"; fi; done; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install --upgrade pip; \
    torch_whl=""; \
    for f in /tmp/wheels/torch-*.whl; do if [ -f "$f" ]; then torch_whl="$f"; fi; done; \
    if [ -n "$torch_whl" ]; then \
        /opt/venv/bin/pip install --find-links /tmp/wheels "$torch_whl"; \
    else \
        /opt/venv/bin/pip install --index-url "$TORCH_INDEX_URL" "$TORCH_SPEC"; \
    fi; \
    /opt/venv/bin/python -c "import torch; assert torch.version.cuda is None, torch.__version__"
# Dependencies from pyproject.toml alone (empty packages and README stand in for the
# sources), so editing code or docs reinstalls only fedchain itself.
COPY pyproject.toml /src/
RUN set -eu; \
    for f in /tmp/certs/*.crt; do if [ -f "$f" ]; then export PIP_CERT="$f"; fi; done; \
    touch /src/README.md; \
    for d in node consensus fl; do mkdir -p "/src/$d"; touch "/src/$d/__init__.py"; done; \
    /opt/venv/bin/pip install --find-links /tmp/wheels /src; \
    rm -rf /src/README.md /src/node /src/consensus /src/fl /src/build /src/*.egg-info
COPY README.md /src/
COPY node/ /src/node/
COPY consensus/ /src/consensus/
COPY fl/ /src/fl/
# Then drop what a node never runs: pip itself, torch's C++ headers, C++ test binaries
# and protoc (about 130 MB); torch_shm_manager stays for tensor sharing.
RUN set -eu; \
    for f in /tmp/certs/*.crt; do if [ -f "$f" ]; then export PIP_CERT="$f"; fi; done; \
    /opt/venv/bin/pip install --no-deps --force-reinstall /src; \
    /opt/venv/bin/python -W ignore -c "import torch; assert torch.version.cuda is None"; \
    /opt/venv/bin/fedchain version; \
    /opt/venv/bin/pip uninstall -y pip; \
    sp="$(echo /opt/venv/lib/python3*/site-packages)"; \
    rm -rf "$sp/torch/include" "$sp/torch/test" "$sp"/torch/bin/*Test \
        "$sp"/torch/bin/test_* "$sp"/torch/bin/protoc*

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="fedchain" \
      org.opencontainers.image.description="Peer-to-peer federated learning node on a BFT blockchain (CPU)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    FEDCHAIN_DATA_DIR=/data/mnist
COPY --from=build /opt/venv /opt/venv
COPY docker/compose-init.sh /usr/local/bin/fedchain-compose-init
COPY docker/compose-node.sh /usr/local/bin/fedchain-compose-node
# Mount points exist and belong to the user, so fresh named volumes inherit that owner.
RUN set -eu; \
    groupadd --system --gid 10001 fedchain; \
    useradd --system --uid 10001 --gid fedchain --home-dir /home/fedchain \
        --create-home --shell /usr/sbin/nologin fedchain; \
    mkdir -p /home/fedchain/node /testnet /data/mnist; \
    chown fedchain:fedchain /home/fedchain/node /testnet; \
    chmod 0755 /usr/local/bin/fedchain-compose-init /usr/local/bin/fedchain-compose-node
USER fedchain
WORKDIR /home/fedchain
VOLUME ["/home/fedchain/node"]
EXPOSE 26656 26657
# Generous timeouts: on a loaded 2-core machine the CLI's start-up alone can take seconds,
# and a slow check must not mark a working node unhealthy.
HEALTHCHECK --interval=15s --timeout=30s --start-period=60s --retries=3 \
    CMD ["fedchain", "status", "--node", "http://127.0.0.1:26657", "--timeout", "10", "--json"]
ENTRYPOINT ["fedchain"]
CMD ["start", "--home", "/home/fedchain/node"]
