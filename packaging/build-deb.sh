#!/usr/bin/env bash
# Builds tpgate's Debian package with dpkg-deb alone: lays out the tree (binary, unit,
# conffile, man page, docs, maintainer scripts), computes Depends with dpkg-shlibdeps and
# prints the .deb's path.
#
#   packaging/build-deb.sh                      cargo build --release, then package it
#   packaging/build-deb.sh --binary PATH        package an already built binary
#   packaging/build-deb.sh --out DIR            where the .deb goes (default target/debian)
#
# Why not cargo-deb: it is one more tool to build in CI (minutes), and everything here is
# a few lines of dpkg-deb, which every Debian system has; the maintainer scripts and the
# conffile list are spelled out in packaging/deb/ either way. Needs dpkg-dev
# (dpkg-shlibdeps) and binutils (strip). Run as any user: the files are owned by root in
# the package through --root-owner-group.
set -euo pipefail
cd "$(dirname "$0")/.."
umask 022

bin=""
out=target/debian
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) bin=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: $0 [--binary PATH] [--out DIR]" >&2; exit 2 ;;
  esac
done
if [ -z "$bin" ]; then
  cargo build --release --locked -p tpgate >&2
  bin=target/release/tpgate
fi
for tool in dpkg-deb dpkg-shlibdeps strip gzip; do
  command -v "$tool" >/dev/null || { echo "$0: needs $tool (apt-get install dpkg-dev binutils)" >&2; exit 1; }
done

# The binary's own version, so the package can never claim another.
version=$("$bin" --version | awk '{print $2}')
arch=$(dpkg --print-architecture)
maintainer=${DEB_MAINTAINER:-tpgate developers <tpgate@example.org>}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root/DEBIAN"
chmod 0755 "$root"

install -D -m 0755 "$bin" "$root/usr/bin/tpgate"
# As dh_strip does: no symbols, no .comment/.note sections.
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/tpgate"

# The unit in the repository names /usr/local/bin for a hand install; the package's binary
# is in /usr/bin. Only the Exec lines change.
install -d -m 0755 "$root/lib/systemd/system"
sed -E 's#^(Exec[A-Za-z]*=[-+!@:]*)/usr/local/bin/tpgate#\1/usr/bin/tpgate#' \
  packaging/tpgate.service > "$root/lib/systemd/system/tpgate.service"
chmod 0644 "$root/lib/systemd/system/tpgate.service"
if grep -E '^Exec' "$root/lib/systemd/system/tpgate.service" | grep -q /usr/local; then
  echo "$0: the unit still names /usr/local in an Exec line" >&2; exit 1
fi

install -D -m 0644 packaging/config.yaml "$root/etc/tpgate/config.yaml"

doc=$root/usr/share/doc/tpgate
install -D -m 0644 packaging/deb/copyright "$doc/copyright"
gzip -9n < README.md > "$doc/README.md.gz"
# A native package's changelog, one entry for this version, dated like the last commit
# (reproducible builds).
date=$(git log -1 --format=%cD 2>/dev/null || date -R)
{
  echo "tpgate ($version) unstable; urgency=medium"
  echo
  echo "  * Built from the tpgate repository; see its git log for the changes."
  echo
  echo " -- $maintainer  $date"
} | gzip -9n > "$doc/changelog.gz"
install -d -m 0755 "$root/usr/share/man/man8"
gzip -9n < packaging/deb/tpgate.8 > "$root/usr/share/man/man8/tpgate.8.gz"
if [ -s packaging/deb/lintian-overrides ]; then
  install -D -m 0644 packaging/deb/lintian-overrides "$root/usr/share/lintian/overrides/tpgate"
fi
chmod 0644 "$doc"/*.gz "$root/usr/share/man/man8/tpgate.8.gz"

for script in postinst prerm postrm; do
  install -m 0755 "packaging/deb/$script" "$root/DEBIAN/$script"
done
echo /etc/tpgate/config.yaml > "$root/DEBIAN/conffiles"

# dpkg-shlibdeps reads debian/control from its working directory: give it a minimal one.
mkdir -p "$work/src/debian"
printf 'Source: tpgate\n\nPackage: tpgate\nArchitecture: any\n' > "$work/src/debian/control"
shlibs=$(cd "$work/src" && dpkg-shlibdeps -O -e"$root/usr/bin/tpgate" 2>/dev/null |
  sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || { echo "$0: dpkg-shlibdeps found no dependencies" >&2; exit 1; }
size=$(du -sk --apparent-size --exclude=DEBIAN "$root" | cut -f1)

cat > "$root/DEBIAN/control" <<EOF
Package: tpgate
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $size
Depends: $shlibs, adduser
Recommends: nftables, iproute2
Suggests: iptables
Section: net
Priority: optional
Description: transparent-proxy gateway with TPROXY and Clash-style rules
 tpgate sends every TCP and UDP connection of a LAN and of the machine itself
 through Clash/mihomo-style rules: DIRECT, REJECT, or upstream SOCKS5, HTTP,
 Shadowsocks and Trojan proxies and their groups. It intercepts with the
 kernel's TPROXY target, installing its own nftables table (or iptables
 chains) and policy routing, and removes them when it stops.
 .
 The package ships a systemd unit that runs tpgate as the unprivileged
 tpgate user with only the network capabilities it needs. The service is
 not started on installation: edit /etc/tpgate/config.yaml, then enable it.
EOF
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
  xargs -0 md5sum > DEBIAN/md5sums)
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"

mkdir -p "$out"
deb=$out/tpgate_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
echo "$deb"
