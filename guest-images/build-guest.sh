#!/usr/bin/env bash
# Builds the usernet test guest: a Debian bookworm kernel and a small initramfs.
#
#   guest-images/build-guest.sh [OUT_DIR]        (default: build/guest)
#
# Output (OUT_DIR): vmlinuz, vmlinux (the same kernel uncompressed, booted through its PVH
# entry: much faster under TCG), initramfs.cpio.gz, manifest.txt (package versions, module
# load order, sha256 sums). Nothing is installed on the host: packages are fetched with
# `apt-get download` into a cache (GUEST_CACHE, default build/guest-cache) and unpacked with
# `dpkg -x`. The kernel is the ABI that Debian's `linux-image-amd64` points at, in its
# `-unsigned` flavour (override with GUEST_KERNEL_PKG).
#
# The initramfs holds busybox-static (with a link per applet: sh, ip, udhcpc, wget, ping,
# traceroute, nslookup, nc, sha256sum, ...), iperf3, libnfs's nfs-cat/nfs-ls/nfs-cp, the
# shared libraries they need (resolved with the unpacked glibc's own ld.so --list, so a library
# missing from the tree is an error, never a silent pick from the host), and the kernel modules
# for virtio-net, 8139too/8139cp, the NFS client (v3, v4) and qemu_fw_cfg in dependency order.
# The .deb ships no modules.dep: `busybox depmod` generates it in the unpacked tree, the load
# order is a depth-first post-order over it, and the guest gets the subset, sorted.
#
# Reproducible: every file gets the kernel image's mtime, names are sorted, owners are 0:0,
# `cpio --reproducible` renumbers inodes and `gzip -n` drops name and time, so two builds from
# the same packages are byte-identical wherever they are built.
set -euo pipefail
umask 022
export LC_ALL=C

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
out="${1:-$repo/build/guest}"
cache="${GUEST_CACHE:-$repo/build/guest-cache}"
mkdir -p "$out" "$cache/debs" "$cache/unpacked"
out="$(cd "$out" && pwd)"
cache="$(cd "$cache" && pwd)"

log() { printf 'build-guest: %s\n' "$*" >&2; }
die() { printf 'build-guest: error: %s\n' "$*" >&2; exit 1; }

# Top-level modules as GROUP:NAME; their dependencies come from modules.dep. /init loads the
# "boot" group; the "nfs" group loads on demand (mount → request_module → busybox modprobe
# with the modules.dep and modules.alias shipped here) or at boot with usernet.modules=all:
# under TCG the NFS modules take ~2 s to load, the network ones ~0.4 s. 8139too refuses the
# RTL8139C+ that QEMU emulates (revision 0x20) and 8139cp takes it; an emulation with
# revision < 0x20 gets 8139too.
top_modules=(boot:virtio_pci boot:virtio_net boot:8139too boot:8139cp boot:qemu_fw_cfg nfs:nfsv3 nfs:nfsv4)
user_packages=(busybox-static iperf3 libiperf0 libsctp1 libssl3 libnfs-utils libnfs13 libc6)


kernel_pkg="${GUEST_KERNEL_PKG:-}"
if [[ -z "$kernel_pkg" ]]; then
  abi="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')"
  if [[ -z "$abi" ]]; then
    log "apt lists are empty: apt-get update"
    apt-get update -q >&2
    abi="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')"
  fi
  [[ -n "$abi" ]] || die "cannot resolve the kernel ABI from linux-image-amd64"
  kernel_pkg="$abi-unsigned"
fi
packages=("$kernel_pkg" "${user_packages[@]}")

# Fetch (once) and unpack (once) each package at the version apt offers.
declare -A candidate=() tree=()
while read -r pkg ver; do candidate[$pkg]="$ver"; done < <(apt-cache policy "${packages[@]}" 2>/dev/null |
  awk '/^[^ ].*:$/ { p = $1; sub(/:$/, "", p) } /^  Candidate:/ { print p, $2 }')
manifest_pkgs=()
for pkg in "${packages[@]}"; do
  ver="${candidate[$pkg]:-}"
  [[ -n "$ver" && "$ver" != "(none)" ]] || die "apt offers no version of $pkg"
  enc="${ver//:/%3a}"
  shopt -s nullglob
  debs=("$cache/debs/${pkg}_${enc}_"*.deb)
  if ((${#debs[@]} == 0)); then
    log "apt-get download $pkg=$ver"
    (cd "$cache/debs" && apt-get download -q "$pkg=$ver" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2) || true
    debs=("$cache/debs/${pkg}_${enc}_"*.deb)
  fi
  shopt -u nullglob
  ((${#debs[@]} == 1)) || die "download of $pkg=$ver failed"
  deb="${debs[0]}"
  dir="$cache/unpacked/$(basename "$deb" .deb)"
  if [[ ! -e "$dir/.unpacked" ]]; then
    log "dpkg -x $(basename "$deb")"
    rm -rf "$dir" && mkdir -p "$dir"
    dpkg -x "$deb" "$dir"
    touch "$dir/.unpacked"
  fi
  tree[$pkg]="$dir"
  manifest_pkgs+=("$pkg $ver $(sha256sum "$deb" | cut -d' ' -f1)")
done

kroot="${tree[$kernel_pkg]}"
kver="$(cd "$kroot/lib/modules" && ls | head -n1)"
[[ -n "$kver" && -f "$kroot/boot/vmlinuz-$kver" ]] || die "no kernel image in $kernel_pkg"
busybox="${tree[busybox-static]}/bin/busybox"
libc="${tree[libc6]}"
epoch="${SOURCE_DATE_EPOCH:-$(stat -c %Y "$kroot/boot/vmlinuz-$kver")}"

moddir="$kroot/lib/modules/$kver"
if [[ ! -s "$moddir/modules.dep" ]]; then
  log "busybox depmod -b (kernel $kver)"
  "$busybox" depmod -b "$kroot" "$kver"
fi

# Depth-first post-order over modules.dep: a module comes after everything it needs.
# Dependencies are visited in sorted order so the result does not depend on depmod's order.
module_order="$(awk -v want="${top_modules[*]}" '
  function base(p,   b) { b = p; sub(/.*\//, "", b); sub(/\.ko(\.[a-z]+)?$/, "", b); gsub(/-/, "_", b); return b }
  function visit(p, g,   n, i, ds, j, k, t) {
    if (p in done) return
    done[p] = 1
    n = split(deps[p], ds, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (ds[j] < ds[i]) { t = ds[i]; ds[i] = ds[j]; ds[j] = t }
    for (k = 1; k <= n; k++) visit(ds[k], g)
    print g, p
  }
  {
    p = $1; sub(/:$/, "", p)
    d = ""; for (i = 2; i <= NF; i++) d = d (i > 2 ? " " : "") $i
    deps[p] = d; path[base(p)] = p
  }
  END {
    n = split(want, w, " ")
    for (i = 1; i <= n; i++) {
      g = w[i]; sub(/:.*/, "", g); m = w[i]; sub(/.*:/, "", m); gsub(/-/, "_", m)
      if (!(m in path)) { print "missing module " w[i] > "/dev/stderr"; exit 1 }
      visit(path[m], g)
    }
  }' "$moddir/modules.dep")" || die "module resolution failed"

work="$(mktemp -d "$out/.work.XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib/x86_64-linux-gnu,lib64,etc/usernet,usr/share/udhcpc} \
  "$root"/{dev,proc,sys,tmp,run,root,mnt,var} "$root/lib/modules/$kver"
chmod 1777 "$root/tmp"

# busybox and one relative link per applet.
install -m 0755 "$busybox" "$root/bin/busybox"
while read -r applet; do
  [[ "$applet" == bin/busybox || -e "$root/$applet" ]] && continue
  dir="$(dirname "$applet")"
  rel="$(realpath -m --relative-to="/$dir" /bin/busybox)"
  ln -s "$rel" "$root/$applet"
done < <("$busybox" --list-full | sort)

# Dynamic programs and the libraries they need, resolved inside the unpacked trees.
libpath=""
for pkg in "${user_packages[@]}"; do
  for sub in lib/x86_64-linux-gnu usr/lib/x86_64-linux-gnu; do
    [[ -d "${tree[$pkg]}/$sub" ]] && libpath+="${libpath:+:}${tree[$pkg]}/$sub"
  done
done
ldso="$libc/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
[[ -x "$ldso" ]] || die "no ld.so in libc6"
programs=("${tree[iperf3]}/usr/bin/iperf3" "${tree[libnfs-utils]}/usr/bin/nfs-cat"
  "${tree[libnfs-utils]}/usr/bin/nfs-ls" "${tree[libnfs-utils]}/usr/bin/nfs-cp")
declare -A libs=()
for prog in "${programs[@]}"; do
  install -m 0755 "$prog" "$root/usr/bin/$(basename "$prog")"
  while read -r name arrow file _; do
    [[ "$arrow" == "=>" && "$name" != */* ]] || continue
    [[ "$file" == not ]] && die "$(basename "$prog"): $name not found in the unpacked packages"
    case "$file" in "$cache"/*) ;; *) die "$(basename "$prog"): $name resolved outside the packages ($file)" ;; esac
    libs[$name]="$file"
  done < <("$ldso" --inhibit-cache --library-path "$libpath" --list "$prog")
done
for name in $(printf '%s\n' "${!libs[@]}" | sort); do
  install -m 0644 "$(readlink -f "${libs[$name]}")" "$root/lib/x86_64-linux-gnu/$name"
done
install -m 0755 "$(readlink -f "$ldso")" "$root/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
ln -s ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$root/lib64/ld-linux-x86-64.so.2"

# Modules, their load order ("GROUP PATH" lines), and the subsets of modules.dep (dependencies
# listed last-loaded first, as modprobe expects) and modules.alias.
: >"$root/etc/usernet/modules"
module_paths=""
while read -r group rel; do
  mkdir -p "$root/lib/modules/$kver/$(dirname "$rel")"
  install -m 0644 "$moddir/$rel" "$root/lib/modules/$kver/$rel"
  printf '%s /lib/modules/%s/%s\n' "$group" "$kver" "$rel" >>"$root/etc/usernet/modules"
  module_paths+="$rel"$'\n'
done <<<"$module_order"
awk -v order="$module_paths" '
  BEGIN { n = split(order, o, "\n"); for (i = 1; i <= n; i++) { rank[o[i]] = i } }
  { p = $1; sub(/:$/, "", p); if (!(p in rank)) next
    line = p ":"
    for (r = n; r >= 1; r--) for (i = 2; i <= NF; i++) if ($i == o[r]) line = line " " $i
    print line }' "$moddir/modules.dep" | sort >"$root/lib/modules/$kver/modules.dep"
awk -v order="$module_paths" '
  BEGIN { n = split(order, o, "\n"); for (i = 1; i <= n; i++) { b = o[i]; sub(/.*\//, "", b); sub(/\.ko$/, "", b); gsub(/-/, "_", b); have[b] = 1 } }
  $1 == "alias" && ($3 in have)' "$moddir/modules.alias" | sort >"$root/lib/modules/$kver/modules.alias"

# /init, the DHCP script and a minimal /etc.
install -m 0755 "$here/init" "$root/init"
install -m 0755 "$here/udhcpc.script" "$root/usr/share/udhcpc/default.script"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
printf 'hosts: files dns\nnetworks: files\n' >"$root/etc/nsswitch.conf"
printf 'usernet-guest\n' >"$root/etc/hostname"
: >"$root/etc/resolv.conf"
chmod 0644 "$root"/etc/{passwd,group,hosts,nsswitch.conf,hostname,resolv.conf} "$root/etc/usernet/modules" \
  "$root/lib/modules/$kver"/modules.{dep,alias}
# The kernel opens /dev/console for init before anything is mounted.
mknod -m 0600 "$root/dev/console" c 5 1 2>/dev/null || log "mknod failed (not root?): /init reopens the console itself"

find "$root" -exec touch -h -d "@$epoch" {} +
(cd "$root" && find . -mindepth 1 -print0 | sort -z |
  cpio --null --create --format=newc --reproducible --owner=0:0 --quiet) | gzip -n >"$work/initramfs.cpio.gz"
cp "$kroot/boot/vmlinuz-$kver" "$work/vmlinuz"
# The uncompressed ELF boots through its PVH entry note (QEMU -kernel takes it directly):
# under TCG that skips ~4 s of real-mode setup and xz decompression by emulated code.
xz_at="$(grep -obUaP '\xfd7zXZ\x00' "$work/vmlinuz" | head -n1 | cut -d: -f1)"
[[ -n "$xz_at" ]] || die "vmlinuz holds no xz stream"
{ tail -c +"$((xz_at + 1))" "$work/vmlinuz" || true; } | xz -dc --single-stream >"$work/vmlinux" # tail: EPIPE
[[ "$(head -c4 "$work/vmlinux" | od -An -tx1 | tr -d ' ')" == 7f454c46 ]] || die "vmlinux is not ELF"

{
  printf 'kernel %s\n' "$kver"
  printf 'package %s\n' "${manifest_pkgs[@]}"
  printf 'module %s %s\n' $module_order
  (cd "$work" && sha256sum vmlinuz vmlinux initramfs.cpio.gz | sed 's/^/sha256 /')
} >"$work/manifest.txt"
touch -d "@$epoch" "$work/vmlinuz" "$work/vmlinux" "$work/manifest.txt"
# Move into place last: a half-built image never looks up to date. The initramfs goes last
# because the Makefile watches it.
mv -f "$work/vmlinuz" "$out/vmlinuz"
mv -f "$work/vmlinux" "$out/vmlinux"
mv -f "$work/manifest.txt" "$out/manifest.txt"
mv -f "$work/initramfs.cpio.gz" "$out/initramfs.cpio.gz"
log "$(du -h "$out/initramfs.cpio.gz" | cut -f1) initramfs, kernel $kver, in $out"
