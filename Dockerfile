# flag-server: the feature-flag HTTP service.
#   docker build -t flag-server .
#   docker run -p 8080:8080 -e FLAG_ADMIN_TOKEN=change-me -v flags:/data flag-server
# With no DATABASE_URL it runs on the embedded default (SQLite under /data, in-process cache);
# docker-compose.yml runs it with Redis and Postgres.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p flag-server \
 && install -D target/release/flag-server /out/flag-server

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --create-home flags
COPY --from=build /out/flag-server /usr/local/bin/flag-server
USER flags
WORKDIR /data
VOLUME ["/data"]
ENV FLAG_LISTEN=0.0.0.0:8080 \
    DATABASE_URL=sqlite:///data/flags.db?mode=rwc \
    FLAG_LOG_FORMAT=json
EXPOSE 8080
# SIGTERM drains in-flight requests (FLAG_SHUTDOWN_GRACE_MS) and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/flag-server"]
CMD ["serve"]
