# tests/vm/lib.sh: host-side shell library of the qemu guest runners
# (tests/vm/run and tests/vm/systemd/run): apt and the mirror, host tools,
# Debian's 6.12 kernel and headers, the ptp_testclock module and phc_check,
# initramfs helpers. Sourced, not run.
#
# The runner sets before sourcing: CACHE (cache dir), FLAVOUR (amd64), T0
# (start time, date +%s). It defines here: VM_DIR (tests/vm), and the
# variables the functions fill: KDIR ABI KREL (fetch_kernel), BUILD
# (build_module); mod_deps and copy_with_libs write into $IRD.

VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

say() { printf 'vm: %s\n' "$*" >&2; }
die() { say "error: $*"; echo "0 passed, 1 failed"; exit 1; }
elapsed() { echo $(( $(date +%s) - T0 )); }

as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"
	elif command -v sudo >/dev/null; then sudo -n "$@"
	else die "need root for: $*"
	fi
}

# ---------------------------------------------------------------- apt

# The URI of the machine's own apt source for the "bookworm" suite: the
# backports source uses the same mirror (nothing of it is written in the repo).
derive_mirror() {
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		awk '
		function flush() { if (uri != "" && ok && deb && on) print uri; uri = ""; ok = 0; deb = 0; on = 1 }
		BEGIN { on = 1 }
		/^[ \t]*$/ { flush(); next }
		/^[ \t]*#/ { next }
		tolower($1) == "types:" { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
		tolower($1) == "uris:" { uri = $2 }
		tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == "bookworm") ok = 1 }
		tolower($1) == "enabled:" && tolower($2) == "no" { on = 0 }
		END { flush() }' "$f"
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
		     if ($(i + 1) == "bookworm") print $i }' "$f"
	done
}

APT_UPDATED=
apt_update() {
	[ -n "$APT_UPDATED" ] && return 0
	say "apt-get update"
	as_root apt-get update -qq >"$CACHE/apt.log" 2>&1 || { cat "$CACHE/apt.log" >&2; die "apt-get update failed"; }
	APT_UPDATED=1
}

ensure_backports() {
	if grep -rqs '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
		return 0
	fi
	local uri
	uri=$(derive_mirror | head -n 1)
	[ -n "$uri" ] || die "no apt source for bookworm found to derive a backports source from"
	say "adding a bookworm-backports apt source (same mirror as bookworm)"
	as_root tee /etc/apt/sources.list.d/ntpd-host-vm-backports.sources >/dev/null <<-EOF
	Types: deb
	URIs: $uri
	Suites: bookworm-backports
	Components: main
	Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
	EOF
	APT_UPDATED=
}

qemu_has_igb() {
	command -v qemu-system-x86_64 >/dev/null &&
		qemu-system-x86_64 -device help 2>/dev/null | grep -q '"igb"'
}

ensure_host_tools() {
	local missing=()
	command -v busybox >/dev/null && file_is_static "$(command -v busybox)" || missing+=(busybox-static)
	command -v cpio >/dev/null || missing+=(cpio)
	command -v xz >/dev/null || missing+=(xz-utils)
	command -v make >/dev/null || missing+=(make)
	command -v dpkg-deb >/dev/null || missing+=(dpkg)
	command -v jq >/dev/null || missing+=(jq)
	if [ ${#missing[@]} -gt 0 ]; then
		apt_update
		say "installing ${missing[*]}"
		as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			"${missing[@]}" >"$CACHE/apt.log" 2>&1 || { cat "$CACHE/apt.log" >&2; die "apt-get install ${missing[*]} failed"; }
	fi
	if ! qemu_has_igb; then
		# bookworm's qemu 7.2 has no igb; bookworm-backports has qemu 10
		ensure_backports
		apt_update
		say "installing qemu-system-x86 from bookworm-backports"
		as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			-t bookworm-backports qemu-system-x86 >"$CACHE/apt.log" 2>&1 ||
			{ cat "$CACHE/apt.log" >&2; die "installing qemu-system-x86 failed"; }
		qemu_has_igb || die "qemu-system-x86_64 has no igb device"
	fi
}

file_is_static() {
	# busybox from the "busybox" package is dynamic; we need the static one
	! LC_ALL=C ldd "$1" >/dev/null 2>&1
}

# ---------------------------------------------------------------- kernel

KDIR= ABI= KREL=
cached_abis() {
	local d
	for d in "$CACHE"/kernel/*/.complete; do
		if [ -f "$d" ]; then basename "$(dirname "$d")"; fi
	done | sort -V
}

newest_apt_abi() {
	apt-cache pkgnames "linux-image-6.12." 2>/dev/null |
		sed -n "s/^linux-image-\(6\.12\.[0-9]*+deb12\)-$FLAVOUR-unsigned\$/\1/p" | sort -V | tail -n 1
}

fetch_kernel() {
	ABI=${NTPD_HOST_VM_KERNEL:-}
	if [ -z "$ABI" ] && [ "${NTPD_HOST_VM_REFRESH:-0}" != 1 ]; then
		ABI=$(cached_abis | tail -n 1)
	fi
	if [ -z "$ABI" ] || [ ! -f "$CACHE/kernel/$ABI/.complete" ]; then
		if [ -z "$ABI" ]; then
			ABI=$(newest_apt_abi)
			if [ -z "$ABI" ]; then
				ensure_backports
				apt_update
				ABI=$(newest_apt_abi)
			fi
			[ -n "$ABI" ] || die "apt offers no linux-image-6.12.*+deb12-$FLAVOUR-unsigned"
		fi
	fi
	KDIR=$CACHE/kernel/$ABI
	KREL=$ABI-$FLAVOUR
	if [ ! -f "$KDIR/.complete" ]; then
		local dl=$CACHE/kernel/$ABI.download pkgs
		pkgs=(linux-image-$KREL-unsigned linux-headers-$KREL linux-headers-$ABI-common linux-kbuild-$ABI)
		rm -rf "$dl" "$KDIR"
		mkdir -p "$dl" "$KDIR/root"
		say "downloading kernel $KREL and its headers"
		if ! (cd "$dl" && apt-get download -qq "${pkgs[@]}" 2>/dev/null); then
			ensure_backports
			apt_update
			(cd "$dl" && apt-get download -qq "${pkgs[@]}" 2>/dev/null) || die "apt-get download ${pkgs[*]} failed"
		fi
		local deb
		for deb in "$dl"/*.deb; do
			dpkg-deb -x "$deb" "$KDIR/root" || die "unpacking $deb failed"
		done
		rm -rf "$dl"
		touch "$KDIR/.complete"
	fi
	# the arch headers include the common ones by an absolute /usr/src path
	local mk=$KDIR/root/usr/src/linux-headers-$KREL/Makefile
	sed -i "s|^include .*/usr/src/linux-headers-|include $KDIR/root/usr/src/linux-headers-|" "$mk"
	say "kernel $KREL ($(elapsed) s)"
}

# ---------------------------------------------------------------- builds

BUILD=
build_module() {
	BUILD=$CACHE/build
	rm -rf "$BUILD"
	mkdir -p "$BUILD"
	cp -r "$VM_DIR/ptp_testclock" "$BUILD/ptp_testclock"
	make -s -C "$KDIR/root/usr/src/linux-headers-$KREL" M="$BUILD/ptp_testclock" \
		CONFIG_DEBUG_INFO_BTF_MODULES= modules >"$BUILD/module.log" 2>&1 ||
		{ cat "$BUILD/module.log" >&2; die "building ptp_testclock failed"; }
	if grep -q 'warning:' "$BUILD/module.log"; then
		cat "$BUILD/module.log" >&2
		die "ptp_testclock builds with warnings"
	fi
	gcc -static -O2 -Wall -Wextra -Werror -o "$BUILD/phc_check" "$VM_DIR/phc_check.c" ||
		die "building phc_check failed"
	say "built ptp_testclock.ko and phc_check ($(elapsed) s)"
}

# ---------------------------------------------------------------- initramfs helpers

copy_with_libs() { # FILE DESTDIR-in-initramfs
	local f=$1 dest=$2 lib
	install -D -m 0755 "$f" "$IRD$dest/$(basename "$f")"
	for lib in $(ldd "$f" 2>/dev/null | grep -o '/[^ ]*' || true); do
		[ -e "$IRD$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$IRD$lib"
	done
}

# modules in load order: NAME's dependencies first (from the .modinfo section)
mod_deps() {
	local name=$1 ko dep
	ko=$(find "$KDIR/root/lib/modules/$KREL/kernel" -name "$name.ko.xz" -o -name "${name//_/-}.ko.xz" | head -n 1)
	[ -n "$ko" ] || die "module $name not in the kernel package"
	for dep in $(xz -dc "$ko" | tr '\0' '\n' | sed -n 's/^depends=//p' | tr ',' ' '); do
		mod_deps "$dep"
	done
	if ! grep -qx "$(basename "$ko" .ko.xz)" "$IRD/lib/modules/order" 2>/dev/null; then
		xz -dc "$ko" >"$IRD/lib/modules/$(basename "$ko" .ko.xz).ko"
		basename "$ko" .ko.xz >>"$IRD/lib/modules/order"
	fi
}
