# Container image for the farm's binaries (farm-broker, farm-node, farmctl), used by compose.yaml.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends nasm pkg-config libusb-1.0-0-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release -p farm-broker -p farm-node --bins

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends adb ca-certificates libusb-1.0-0 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/farm-broker /src/target/release/farm-node /src/target/release/farmctl /usr/local/bin/
EXPOSE 4444
CMD ["farm-broker", "serve", "--listen", "0.0.0.0:4444", "--data-dir", "/var/lib/farm"]
