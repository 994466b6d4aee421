# The orders service, built in one stage and run from a slim image in another.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# A workspace member: cargo reads its manifest, though the server does not depend on it.
COPY client ./client
COPY migrations ./migrations
COPY src ./src
RUN cargo build --release --locked --bin orders

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 orders
COPY --from=build /src/target/release/orders /usr/local/bin/orders
USER orders
ENV ORDERS_BIND=0.0.0.0:8080
EXPOSE 8080
# With DATABASE_URL set, the service uses that server and starts no PostgreSQL of its own.
ENTRYPOINT ["orders"]
CMD ["serve"]
