# snapworker — build on Debian 12 with the distribution's libraries, run as non-root.
FROM debian:12-slim AS build
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends \
      build-essential pkg-config libhiredis-dev libevent-dev libjansson-dev \
      libcurl4-openssl-dev libarchive-dev libpq-dev libssl-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN make clean && make -j"$(nproc)" snapworker && make install PREFIX=/opt/snapworker

FROM debian:12-slim
# The runtime libraries of every library the Makefile links (ldd snapworker lists them).
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends \
      libhiredis0.14 libevent-2.1-7 libevent-pthreads-2.1-7 libjansson4 libcurl4 \
      libarchive13 libpq5 libssl3 ca-certificates nodejs npm tini && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home snapworker \
    && mkdir -p /store /sandboxes && chown snapworker /store /sandboxes
COPY --from=build /opt/snapworker /opt/snapworker
USER snapworker
ENV SANDBOX_BASE_PATH=/sandboxes SNAPWORKER_STORE=file:///store SNAPWORKER_HTTP_ADDR=0.0.0.0:9464
EXPOSE 9464
# tini as PID 1: a dev server started by a restore outlives the job process that started it
# (docs/processes.md), so when it exits someone must reap it; snapworker only reaps its own
# job processes.
ENTRYPOINT ["/usr/bin/tini", "--", "/opt/snapworker/bin/snapworker"]
CMD ["run"]
