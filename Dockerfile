# AxiomNet daemon image: a multi-stage build (wheels and a virtual environment in the first stage, only that
# environment in the second) on a base you choose.
#
#   docker build -t axiomnet .                          # BASE defaults to the official python:3.11 slim image
#   docker build -t axiomnet --build-arg BASE=my/debian-with-python3 .
#
#   docker run -d --name axn --cap-add NET_ADMIN --device /dev/net/tun -p 7443:7443/udp \
#       -v axiomnet-data:/var/lib/axiomnet axiomnet --peer 192.0.2.7:7443
#
# Arguments after the image name go to `axiomnet daemon` (AXIOMNET_* variables work too). The identity lives
# in the /var/lib/axiomnet volume: keep it and the node keeps its address. `docker stop` sends SIGTERM; the
# daemon exits 0 within 5 s. The health check is `axiomnet-inspect health --liveness`. See docs/OPERATIONS.md.
#
# BASE must provide python3 (3.11 or newer) with its venv module. pip in the first stage honours the usual
# PIP_* settings, passed as build arguments (PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST), and a
# CA bundle placed in the build context as pip-ca.pem with --build-arg PIP_CERT=/src/pip-ca.pem.
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
ARG PIP_CERT
ARG PIP_DEFAULT_TIMEOUT=60
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# pip-ca.pe[m]: copied when the build context has one, skipped when it has none.
COPY pyproject.toml README.md pip-ca.pe[m] ./
COPY actors/ actors/
COPY ops/ ops/
COPY lab/ lab/
COPY axiomnet/ axiomnet/
RUN python3 -m venv /opt/axiomnet \
 && /opt/axiomnet/bin/pip wheel --wheel-dir /wheels /src \
 && /opt/axiomnet/bin/pip install --no-index --find-links /wheels axiomnet \
 && /opt/axiomnet/bin/pip uninstall --yes pip setuptools \
 && find /opt/axiomnet/lib -depth -type d -name tests -path "*/site-packages/*" -exec rm -rf {} + \
 && /opt/axiomnet/bin/python -m compileall -q /opt/axiomnet \
 && /opt/axiomnet/bin/axiomnet --version

FROM ${BASE}
COPY --from=build /opt/axiomnet /opt/axiomnet
ENV PATH=/opt/axiomnet/bin:$PATH PYTHONUNBUFFERED=1
VOLUME /var/lib/axiomnet
EXPOSE 7443/udp
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["axiomnet-inspect", "health", "--liveness"]
ENTRYPOINT ["axiomnet", "daemon"]
