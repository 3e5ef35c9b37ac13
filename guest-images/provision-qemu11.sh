#!/usr/bin/env bash
# Provisions QEMU ≥ 10.1 (for vfio-user) without touching the host's packages.
#
#   guest-images/provision-qemu11.sh [OUT_DIR]        (default: build/qemu11)
#
# Debian 12's QEMU 7.2 has no vfio-user client; trixie has 10.0 (none either); trixie-backports
# has 11.x with `vfio-user-pci`. So: `debootstrap --variant=minbase trixie OUT/rootfs` from the
# Debian mirror this host's apt already uses (read from /etc/apt/sources.list*), add
# trixie-backports inside, install qemu-system-x86 (and passt, for a vhost-user anchor) from it
# with --no-install-recommends, all in a private mount namespace so no mount outlives the run.
#
# Then OUT/qemu-system-x86_64, a wrapper that runs the rootfs's QEMU from the host through the
# rootfs's own ld.so with --library-path (no chroot: sockets and files stay the host's). QEMU
# finds its data directory relative to its executable, which /proc/self/exe names as that ld.so,
# so OUT/rootfs/usr/lib/x86_64-linux-gnu/qemu-bundle -> ../../.. points it back at the rootfs
# (firmware, modules, /etc/qemu) instead of the host's 7.2 files. OUT/passt likewise.
#
# Idempotent: OUT/.stamp is written last, after `-device help` lists vfio-user-pci.
set -euo pipefail
umask 022
export LC_ALL=C DEBIAN_FRONTEND=noninteractive

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
out="${1:-$repo/build/qemu11}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
root="$out/rootfs"
suite=trixie

log() { printf 'provision-qemu11: %s\n' "$*" >&2; }
die() { printf 'provision-qemu11: error: %s\n' "$*" >&2; exit 1; }

[[ -e "$out/.stamp" && -x "$out/qemu-system-x86_64" ]] && { log "up to date: $out"; exit 0; }
[[ $(id -u) == 0 ]] || die "needs root (debootstrap, chroot)"
command -v debootstrap >/dev/null || die "debootstrap is not installed"

# The Debian mirror of this host's main archive: the first URI whose suites include the host's
# release codename (not -security, not -updates), from deb822 .sources or one-line .list files.
codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
mirror="$(
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
    [[ -r "$f" ]] || continue
    case "$f" in
      *.sources)
        awk -v want="$codename" '
          function flush() { if (uri != "" && ok && enabled) print uri; uri = ""; ok = 0; enabled = 1 }
          BEGIN { enabled = 1 }
          /^[ \t]*#/ { next }
          /^[ \t]*$/ { flush(); next }
          tolower($1) == "uris:" { uri = $2 }
          tolower($1) == "enabled:" && tolower($2) == "no" { enabled = 0 }
          tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == want) ok = 1 }
          END { flush() }' "$f" ;;
      *)
        awk -v want="$codename" '
          $1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i + 1) == want) print $i }' "$f" ;;
    esac
  done | head -n1
)"
[[ -n "$mirror" ]] || die "no Debian mirror for $codename found in /etc/apt/sources.list*"
mirror="${mirror%/}"
log "mirror $mirror"

if [[ ! -e "$root/.debootstrap-done" ]]; then
  rm -rf "$root"
  log "debootstrap --variant=minbase $suite"
  unshare -m --propagation private debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$out/debootstrap.log" 2>&1 ||
    { tail -n 20 "$out/debootstrap.log" >&2; die "debootstrap failed (log: $out/debootstrap.log)"; }
  touch "$root/.debootstrap-done"
fi

cat >"$root/etc/apt/sources.list.d/backports.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $suite-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
# No daemons start inside the rootfs.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true

log "apt-get install -t $suite-backports qemu-system-x86 passt"
unshare -m --propagation private /bin/sh -ec '
  mount -t proc proc "$1/proc"
  chroot "$1" apt-get update -q
  chroot "$1" apt-get install -y -q -t "$2-backports" --no-install-recommends qemu-system-x86 passt
  chroot "$1" apt-get clean
' sh "$root" "$suite" >"$out/apt.log" 2>&1 || { tail -n 20 "$out/apt.log" >&2; die "apt-get in the rootfs failed (log: $out/apt.log)"; }

ln -sfn ../../.. "$root/usr/lib/x86_64-linux-gnu/qemu-bundle"

for prog in qemu-system-x86_64 passt; do
  cat >"$out/$prog.tmp" <<'EOF'
#!/bin/sh
# Runs PROG from the trixie rootfs beside this script, through the rootfs's own loader and
# libraries (written by guest-images/provision-qemu11.sh).
here="$(dirname "$(readlink -f "$0")")"
lib="$here/rootfs/usr/lib/x86_64-linux-gnu"
exec "$lib/ld-linux-x86-64.so.2" --inhibit-cache --library-path "$lib" --argv0 "$0" "$here/rootfs/usr/bin/PROG" "$@"
EOF
  sed -i "s/PROG/$prog/g" "$out/$prog.tmp"
  chmod 0755 "$out/$prog.tmp"
  mv -f "$out/$prog.tmp" "$out/$prog"
done

"$out/qemu-system-x86_64" --version | head -n1 >&2
"$out/qemu-system-x86_64" -device help 2>/dev/null | grep -q '"vfio-user-pci"' ||
  die "this QEMU lists no vfio-user-pci device"
"$out/qemu-system-x86_64" -device help 2>/dev/null | grep vfio-user >&2
du -sh "$root" | sed 's/^/provision-qemu11: rootfs /' >&2
touch "$out/.stamp"
