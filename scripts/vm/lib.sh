# shellcheck shell=bash
# Helpers for scripts/vm-test and `scripts/install-deps --vm`. Source it, do
# not run it. Defines VM_* variables and vm_* functions; uses die/info/warn
# from scripts/common.sh.

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    echo "vm/lib.sh is a library; source it from another script" >&2
    exit 2
fi

VM_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# Debian packages scripts/vm-test needs (installed by `install-deps --vm`).
# shellcheck disable=SC2034 # used by install-deps
VM_PACKAGES=(
    qemu-system-x86   # qemu-system-x86_64
    linux-image-amd64 # a stock kernel with sch_netem as a module
    busybox-static    # the initramfs userland
    kmod              # modprobe --show-depends, depmod
    cpio              # initramfs archives
)

# Modules the guest loads at boot, with their `modprobe --show-depends`
# closure. A required one missing from the kernel (neither module nor
# built in) is an error; an optional one is skipped.
VM_MODULES_REQUIRED=(
    virtio_pci 9pnet_virtio 9p
    sch_netem sch_tbf sch_htb sch_ingress cls_u32 act_mirred
    ifb veth bridge tun nfnetlink_queue
)
VM_MODULES_OPTIONAL=(
    af_packet virtio_console netfs
    sch_prio sch_sfq sch_fq_codel cls_matchall cls_basic cls_fw act_gact act_police
    dummy 8021q macvlan
)

# Host programs copied into the initramfs with their shared libraries. The
# real ip/tc/ping replace busybox's applets; dash is /bin/sh so that `sh -c
# 'ip ...'` finds the real ip on PATH (busybox ash would run its own applet).
# The optional list also replaces the busybox applets that run other programs
# (timeout, env, xargs, ...): this busybox prefers its own applets when it
# execs, so `timeout 5 ip netns ...` would get busybox's ip.
VM_PROGRAMS_REQUIRED=(ip tc ping dash bash)
VM_PROGRAMS_OPTIONAL=(
    iperf3 tcpdump ss bridge nstat
    timeout env nice nohup chroot xargs find setsid taskset flock nsenter unshare
    ps pgrep pkill sysctl
)

# Busybox applets linked into /bin where no real program above took the name.
# Never ip, tc, ping or sh.
VM_APPLETS=(
    awk basename cat chmod chown cmp cp cut date dd df dirname dmesg du echo env
    expr false find free grep gzip head hostname id insmod kill ln ls lsmod mkdir
    mkfifo mknod mktemp modprobe more mount mv nc nproc od pgrep pidof pkill
    poweroff printf ps pwd readlink realpath reboot rm rmdir rmmod sed seq sleep
    sort stat stty sync sysctl tail tar tee test timeout top touch tr true
    umount uname uniq uptime usleep vi wc which xargs yes
)

# Newest kernel version in /boot whose modules include sch_netem.
vm_pick_kernel() {
    local f v
    local -a found=()
    for f in /boot/vmlinuz-*; do
        [[ -e "$f" ]] || continue
        v="${f#/boot/vmlinuz-}"
        if compgen -G "/lib/modules/$v/kernel/net/sched/sch_netem.ko*" >/dev/null; then
            found+=("$v")
        fi
    done
    ((${#found[@]} > 0)) || return 1
    printf '%s\n' "${found[@]}" | sort -V | tail -n 1
}

# Absolute path of a program, or nothing.
vm_which() {
    local p
    p="$(PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH" command -v "$1" 2>/dev/null)" || return 1
    [[ "$p" == /* ]] || return 1
    printf '%s\n' "$p"
}

# Fill the arrays VM_IN_FILES (host files to copy at the same path),
# VM_IN_MODFILES (module files) and VM_IN_MODULES (module names to load at
# boot) and VM_IN_BUSYBOX for kernel $1. Extra programs may be passed after
# it. Forks little: it runs on every vm-test to compute the cache key.
vm_collect_inputs() {
    local kver="$1" name path f
    shift
    VM_IN_FILES=()
    VM_IN_MODFILES=()
    VM_IN_MODULES=()
    VM_IN_PROGRAMS=()

    local -a dirs=(/usr/sbin /usr/bin /sbin /bin)
    local IFS=:
    # shellcheck disable=SC2206 # split PATH on colons
    dirs+=($PATH)
    unset IFS
    # Sets $path to the first executable $1 in dirs.
    _vm_find_prog() {
        local d
        for d in "${dirs[@]}"; do
            if [[ -n "$d" && -f "$d/$1" && -x "$d/$1" ]]; then
                path="$d/$1"
                return 0
            fi
        done
        return 1
    }

    _vm_find_prog busybox || die "busybox not found: run scripts/install-deps --vm"
    VM_IN_BUSYBOX="$path"
    for name in "${VM_PROGRAMS_REQUIRED[@]}"; do
        _vm_find_prog "$name" || die "$name not found on the host (scripts/install-deps installs it)"
        VM_IN_PROGRAMS+=("$path")
    done
    for name in "${VM_PROGRAMS_OPTIONAL[@]}"; do
        if _vm_find_prog "$name"; then VM_IN_PROGRAMS+=("$path"); fi
    done
    for name in "$@"; do
        _vm_find_prog "$name" || die "--with $name: not found on the host"
        VM_IN_PROGRAMS+=("$path")
    done

    # The programs, their shared libraries and the dynamic loader, in one
    # ldd run. A Rust (glibc) binary from the shared repository, like
    # target/release/testbed, needs libc, libm, libgcc_s and the loader:
    # add those whether or not a program above uses them.
    local -A seen=()
    local -a libs
    mapfile -t libs < <(
        # busybox-static needs none; a dynamic busybox gets its libraries.
        ldd "$VM_IN_BUSYBOX" "${VM_IN_PROGRAMS[@]}" 2>/dev/null | awk '
            $2 == "=>" && $3 ~ /^\// { print $3; next }
            $1 ~ /^\// && $1 !~ /:$/ { print $1 }' || true # ldd fails on static files
        ldconfig -p | awk '
            /x86-64/ && $1 ~ /^(libc\.so\.6|libm\.so\.6|libgcc_s\.so\.1|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|libutil\.so\.1)$/ &&
            !seen[$1]++ { print $NF }'
    )
    for f in "${VM_IN_PROGRAMS[@]}" "${libs[@]}" \
        /usr/lib/tc/*.dist /usr/lib/*/tc/*.dist /usr/share/iproute2/* /etc/iproute2/* \
        /etc/protocols /etc/services; do
        # The .dist files are tc's delay distribution tables (netem
        # ... distribution normal).
        [[ -f "$f" && -z "${seen[$f]:-}" ]] || continue
        seen[$f]=1
        VM_IN_FILES+=("$f")
    done

    # Modules: the `modprobe --show-depends` closure, in one run. Built-in
    # ones need nothing; a required one that is missing is an error.
    [[ -d "/lib/modules/$kver" ]] || die "/lib/modules/$kver not found"
    local deps errs line mod
    errs="$(modprobe -S "$kver" --show-depends -a "${VM_MODULES_REQUIRED[@]}" "${VM_MODULES_OPTIONAL[@]}" 2>&1 >/dev/null || true)"
    for mod in "${VM_MODULES_REQUIRED[@]}"; do
        if [[ "$errs" == *"Module $mod not found"* ]]; then
            die "kernel $kver has no module $mod (neither built in nor a module)"
        fi
    done
    deps="$(modprobe -S "$kver" --show-depends -a "${VM_MODULES_REQUIRED[@]}" "${VM_MODULES_OPTIONAL[@]}" 2>/dev/null || true)"
    local -A seenmod=() ismod=()
    while read -r line; do
        [[ "$line" == insmod\ * ]] || continue
        path="${line#insmod }"
        path="${path%% *}"
        [[ -z "${seenmod[$path]:-}" ]] || continue
        seenmod[$path]=1
        VM_IN_MODFILES+=("$path")
        mod="${path##*/}"
        mod="${mod%%.ko*}"
        ismod[${mod//-/_}]=1
    done <<<"$deps"
    # Boot loads the requested names that are modules; modprobe adds their
    # dependencies.
    for mod in "${VM_MODULES_REQUIRED[@]}" "${VM_MODULES_OPTIONAL[@]}"; do
        if [[ -n "${ismod[$mod]:-}" ]]; then VM_IN_MODULES+=("$mod"); fi
    done
}

# A short hash of everything that goes into the base initramfs: the file
# lists with sizes and mtimes, and this directory's scripts.
vm_inputs_hash() {
    local kver="$1"
    {
        echo "kernel $kver"
        printf 'module %s\n' "${VM_IN_MODULES[@]}"
        stat -L -c '%n %s %Y' "$VM_IN_BUSYBOX" "${VM_IN_FILES[@]}" "${VM_IN_MODFILES[@]}" \
            "/lib/modules/$kver/modules.builtin" "/lib/modules/$kver/modules.order" 2>/dev/null || true
        cat "$VM_DIR/lib.sh" "$VM_DIR/init"
    } | sha256sum | cut -c1-16
}

# Build the base initramfs for kernel $1 into file $2: an uncompressed newc
# cpio (the guest unpacks it faster than a compressed one under TCG), padded
# to 4 bytes so that another archive can be appended.
# vm_collect_inputs must have run.
vm_build_initramfs() {
    local kver="$1" out="$2" stage f dst name base
    stage="$(mktemp -d "${TMPDIR:-/tmp}/vm-initramfs.XXXXXX")"
    # shellcheck disable=SC2064 # expand now: the local is gone when RETURN fires
    trap "rm -rf '$stage'" RETURN

    # Merged /usr layout, as on Debian 12, so host paths copy as they are.
    mkdir -p "$stage"/usr/{bin,sbin,lib,lib64} "$stage"/{dev,proc,sys,run,tmp,root,etc,mnt}
    ln -s usr/bin "$stage/bin"
    ln -s usr/sbin "$stage/sbin"
    ln -s usr/lib "$stage/lib"
    ln -s usr/lib64 "$stage/lib64"
    chmod 1777 "$stage/tmp"

    for f in "${VM_IN_FILES[@]}"; do
        dst="$stage$f"
        mkdir -p "$(dirname "$dst")"
        [[ -e "$dst" ]] || cp -L "$f" "$dst"
    done
    ln -s dash "$stage/usr/bin/sh"

    cp "$VM_IN_BUSYBOX" "$stage/usr/bin/busybox"
    for name in "${VM_APPLETS[@]}"; do
        [[ -e "$stage/usr/bin/$name" || -e "$stage/usr/sbin/$name" ]] && continue
        ln -s busybox "$stage/usr/bin/$name"
    done

    # Modules, decompressed so busybox's modprobe/insmod can load any of them.
    local mdir="/lib/modules/$kver"
    for f in "${VM_IN_MODFILES[@]}"; do
        dst="$stage$f"
        mkdir -p "$(dirname "$dst")"
        case "$f" in
        *.ko.xz) xz -dc "$f" >"${dst%.xz}" ;;
        *.ko.zst) zstd -qdc "$f" >"${dst%.zst}" ;;
        *.ko.gz) gzip -dc "$f" >"${dst%.gz}" ;;
        *) cp "$f" "$dst" ;;
        esac
    done
    for base in modules.builtin modules.builtin.modinfo modules.order; do
        [[ -f "$mdir/$base" ]] && cp "$mdir/$base" "$stage$mdir/"
    done
    depmod -b "$stage" "$kver"
    printf '%s\n' "${VM_IN_MODULES[@]}" >"$stage/etc/vm-test-modules"

    cp "$VM_DIR/init" "$stage/init"
    chmod 755 "$stage/init"
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$stage/etc/passwd"
    printf 'root:x:0:\n' >"$stage/etc/group"
    printf '127.0.0.1 localhost vm-test\n::1 localhost\n' >"$stage/etc/hosts"

    (cd "$stage" && find . -print0 | LC_ALL=C sort -z |
        cpio --null -o -H newc -R 0:0 --quiet) >"$out"
    truncate -s %4 "$out"
}

# Extract the uncompressed ELF vmlinux from bzImage $1 into $2, for QEMU's
# PVH direct boot, which skips the firmware and the in-guest decompression
# (about 6 s under TCG). Fails if the kernel has no PVH entry point.
vm_extract_vmlinux() {
    local bz="$1" out="$2" magic off tool
    for magic in $'\xfd7zXZ:xz' $'\x28\xb5\x2f\xfd:zstd' $'\x1f\x8b\x08:gzip'; do
        tool="${magic##*:}"
        command -v "$tool" >/dev/null 2>&1 || continue
        while read -r off; do
            [[ -n "$off" ]] || continue
            tail -c +"$((off + 1))" "$bz" | "$tool" -dc >"$out" 2>/dev/null || true
            if [[ "$(head -c 4 "$out" | od -An -c | tr -d ' ')" == '177ELF' ]]; then
                # XEN_ELFNOTE_PHYS32_ENTRY (18): QEMU boots such an ELF directly.
                local notes
                notes="$(readelf -n "$out" 2>/dev/null || true)"
                if [[ "$notes" =~ \(0x00000012\)|PHYS32 ]]; then
                    return 0
                fi
                rm -f "$out"
                return 1
            fi
        done < <(LC_ALL=C grep -abo "${magic%:*}" "$bz" 2>/dev/null | awk -F: 'NR <= 3 { print $1 }')
    done
    rm -f "$out"
    return 1
}
