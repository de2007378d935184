# Build the release binary, then run `stepkto serve` on a slim image.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
COPY static static
COPY openapi openapi
# Cargo.toml names the bench target; its file (and the test helper it includes) must exist.
COPY benches benches
COPY tests tests
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/stepkto /usr/local/bin/stepkto
WORKDIR /data
ENV STEPKTO_ADDR=0.0.0.0:8080
EXPOSE 8080
# The verdict cache is /data/stepkto.db unless DATABASE_URL names PostgreSQL.
CMD ["stepkto", "serve"]
