# syntax=docker/dockerfile:1
# The pgops operator image: both operators and the instance agent as static binaries on
# distroless, the operators run as the
# non-root user 65532. `make image` builds it with docker or podman; `make image-archive`
# builds the same layout offline (hack/image), and internal/imagebuild's test checks that
# against manifests/operators. The manifests set the command, so the entrypoint is only a
# default.

# Keep in step with go.mod's go line (the imagebuild test checks it).
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -buildvcs=false -ldflags '-s -w' -o /out/ ./cmd/provisioner ./cmd/ops-manager ./cmd/pgops-agent

# distroless/static: CA certificates, tzdata, /etc/passwd with nonroot (65532), no shell.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="pgops" \
      org.opencontainers.image.description="pgops operators: provisioner and ops-manager" \
      org.opencontainers.image.source="https://github.com/pgops/pgops" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/provisioner /usr/local/bin/provisioner
COPY --from=build /out/ops-manager /usr/local/bin/ops-manager
# Not run from this image: the database pods' init container copies it into the pod.
COPY --from=build /out/pgops-agent /usr/local/bin/pgops-agent
USER 65532:65532
WORKDIR /
ENTRYPOINT ["/usr/local/bin/provisioner"]
