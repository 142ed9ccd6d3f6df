# Dockerfile: builds nhi-operator as a static (musl) binary and ships it on distroless, non-root.

# --- build -------------------------------------------------------------------------------------
FROM rust:1.95.0-bookworm AS builder
# musl-gcc compiles aws-lc-sys' C code for the static target.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools=1.2.3-1 \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin nhi-operator \
 && cp target/x86_64-unknown-linux-musl/release/nhi-operator /nhi-operator

# --- runtime -----------------------------------------------------------------------------------
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=builder /nhi-operator /nhi-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/nhi-operator"]
CMD ["run"]
