#!/usr/bin/env bash
# Builds prewarm's container image without a Docker engine: static (musl)
# release binaries, then images/Containerfile with buildah, written as an OCI
# archive (target/images/prewarm-<tag>.tar; OUT_DIR overrides the directory).
# The image is IMAGE_REPOSITORY:IMAGE_TAG, by default localhost/prewarm:<version
# in Cargo.toml>, the image the manifests and the Helm chart name. Reproducible
# from a commit: timestamps are zeroed, and the commit is the
# org.opencontainers.image.revision label. Installs what it needs
# (musl-tools, buildah, ca-certificates, the musl Rust target) idempotently; needs root for apt.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/apt-packages.sh

TARGET=x86_64-unknown-linux-musl
BINARIES=(prewarm-webhook prewarm-controller prewarm-nodeagent)
OUT_DIR=${OUT_DIR:-target/images}
IMAGE_REPOSITORY=${IMAGE_REPOSITORY:-localhost/prewarm}
IMAGE_TAG=${IMAGE_TAG:-$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)}

apt_packages musl-tools buildah ca-certificates
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"

packages=()
for binary in "${BINARIES[@]}"; do packages+=(-p "$binary"); done
# Symbols stripped in the image only: benchmarks profile the unstripped host build.
CARGO_PROFILE_RELEASE_STRIP=symbols cargo build --release --locked --target "$TARGET" "${packages[@]}" --bins

revision=$(git rev-parse HEAD)
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
for binary in "${BINARIES[@]}"; do
    install -m 0755 "${CARGO_TARGET_DIR:-target}/$TARGET/release/$binary" "$context/$binary"
done
cp images/Containerfile "$context/"
# Debian's CA bundle, for TLS clients in the image (credential-provider plugins).
install -m 0644 /etc/ssl/certs/ca-certificates.crt "$context/ca-certificates.crt"
image="$IMAGE_REPOSITORY:$IMAGE_TAG"
buildah build --quiet --timestamp 0 --layers=false \
    --label "org.opencontainers.image.revision=$revision" \
    --label "org.opencontainers.image.source=prewarm" \
    -f "$context/Containerfile" -t "$image" "$context" >/dev/null
mkdir -p "$OUT_DIR"
archive="$OUT_DIR/prewarm-$IMAGE_TAG.tar"
rm -f "$archive"
buildah push --quiet "$image" "oci-archive:$archive:$image" >/dev/null
echo "image $image (revision $revision)"
echo "archive $archive ($(du -h "$archive" | cut -f1))"
for binary in "${BINARIES[@]}"; do
    echo "  $binary $(du -h "$context/$binary" | cut -f1)"
done
