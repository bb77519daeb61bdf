#!/usr/bin/env bash
# Builds the `warren:local` image on a machine that can pull no image.
#
# The Dockerfile's default base is a public image (debian:bookworm-slim).
# Where no registry is reachable, this script makes an equivalent base
# itself: `debootstrap --variant=minbase bookworm` into a folder, imported
# with `docker import` as `warren-base:bookworm`, and passes it as the
# BASE build argument. The root file system is cached as a tarball (in
# $WARREN_BASE_CACHE, default ~/.cache/warren) and the image is kept, so
# later runs take seconds.
#
# The binary is built on the host and copied in (Debian bookworm's glibc
# and libstdc++, as in the base):
#   deploy/docker/build-image.sh [--binary PATH] [--tag TAG] [--public-base]
# default binary: target/release/warren (build it first); --public-base
# builds FROM the Dockerfile's default instead (needs a registry).
set -euo pipefail
cd "$(dirname "$0")/../.."

binary=target/release/warren
tag=warren:local
public_base=0
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --public-base) public_base=1; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
[ -x "$binary" ] || { echo "no binary at $binary: cargo build --release --bin warren first" >&2; exit 1; }

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
base_tag=warren-base:bookworm
build_args=()
if [ "$public_base" -eq 0 ]; then
  if ! docker image inspect "$base_tag" >/dev/null 2>&1; then
    cache="${WARREN_BASE_CACHE:-$HOME/.cache/warren}"
    rootfs_tar="$cache/bookworm-minbase.tar"
    if [ ! -s "$rootfs_tar" ]; then
      if ! command -v debootstrap >/dev/null; then
        $SUDO apt-get update
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap
      fi
      mirror="${WARREN_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
      mkdir -p "$cache"
      work="$(mktemp -d "$cache/rootfs.XXXXXX")"
      trap '$SUDO rm -rf "$work"' EXIT
      echo "--- debootstrap --variant=minbase bookworm (once; cached in $rootfs_tar)"
      $SUDO debootstrap --variant=minbase bookworm "$work/root" "$mirror" >"$work/debootstrap.log" 2>&1 \
        || { tail -30 "$work/debootstrap.log" >&2; exit 1; }
      # What an image needs no more of: package lists, caches, docs.
      $SUDO rm -rf "$work/root/var/lib/apt/lists/"* "$work/root/var/cache/apt/"*.bin \
        "$work/root/var/cache/apt/archives/"*.deb "$work/root/usr/share/doc" "$work/root/usr/share/man"
      $SUDO tar -C "$work/root" --numeric-owner -cf "$rootfs_tar.tmp" .
      mv "$rootfs_tar.tmp" "$rootfs_tar"
    fi
    docker import "$rootfs_tar" "$base_tag" >/dev/null
  fi
  build_args+=(--build-arg "BASE=$base_tag")
fi

# A context of two files: the Dockerfile and the binary without its debug
# sections (the debug build's are hundreds of MiB).
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"; [ -z "${work:-}" ] || $SUDO rm -rf "$work"' EXIT
cp deploy/docker/Dockerfile "$ctx/Dockerfile"
if command -v objcopy >/dev/null; then
  objcopy --strip-debug "$binary" "$ctx/warren"
else
  cp "$binary" "$ctx/warren"
fi
docker build -q "${build_args[@]}" -t "$tag" "$ctx" >/dev/null
echo "$tag"
