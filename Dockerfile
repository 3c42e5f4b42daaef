# Multi-stage build: the same steps as scripts/build-release.sh, then a slim runtime image.
# (Docker images cannot be built on the project's machines; the script is what CI exercises.)
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN scripts/build-release.sh

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/dist /app
WORKDIR /app
ENV HOST=0.0.0.0 PORT=3000 WEB_DIR=/app/web DATABASE_PATH=/var/data/brain.db APP_ENV=production
EXPOSE 3000
CMD ["/app/brain-server"]
