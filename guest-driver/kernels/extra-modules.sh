# extra-modules.sh: sourced by fetch-debian. Builds filesystem drivers a
# catalogue kernel lacks, out of tree, against that kernel's own headers and
# source, and installs them beside its modules:
#   CACHE/kernels/NAME/modules/extra/<module>.ko   (then depmod, so kmod finds it)
#   CACHE/kernels/NAME/modules/extra/<module>.built (what it was built from)
#
# Why a chroot of the kernel's suite: Debian's headers are laid out for
# /usr/src (the flavour Makefile includes /usr/src/linux-headers-*-common by
# absolute path), and their kbuild tools and the kernel's compiler belong to
# that suite (bookworm: gcc-12; trixie: gcc-14 and trixie's glibc). The chroot
# (made once by mmdebstrap, cached as CACHE/chroots/SUITE) gets each kernel's
# headers unpacked into it with dpkg-deb; nothing is installed on the host.
#
# Uses from fetch-debian: cache, target, name, suite, want (image
# package=version), apt_opts, host_suite, cleanup_dirs, die, log, debian_sources.

# Extra modules: name -> what the guest mounts with. ext2 is renamed because
# the kernels' built-in ext4 already registers "ext2" (CONFIG_EXT4_USE_FOR_EXT2).
declare -A kExtraModules=([ext2]=ext2mpage)

# What the build chroots hold: the kernel build's tools (pahole: 6.12's
# module build runs it for BTF; the headers package depends on it).
kChrootPackages=gcc,make,libc6-dev,bc,bison,flex,libelf-dev,libssl-dev,xz-utils,kmod,pahole

extra_module_known() { [[ -n ${kExtraModules[$1]:-} ]]; }
extra_module_names() { echo "${!kExtraModules[@]}"; }

# The chroot for SUITE, made once, in $chroot_dir. Its lock is held until
# this run ends: kernels of one suite unpack their headers into it in turn.
suite_chroot() {
    local suite=$1 dir=$cache/chroots/$1 tmp lines=() stamp
    chroot_dir=$dir
    mkdir -p "$cache/chroots"
    # Kernels of one suite share the chroot: one builder at a time.
    exec 7>"$cache/chroots/.$suite.lock"
    flock 7 || die "cannot lock $cache/chroots/.$suite.lock"
    mapfile -t lines < <(debian_sources "$suite")
    ((${#lines[@]})) || die "no Debian archive URIs for $suite"
    # Made from these packages and sources; other ones make it anew.
    stamp=$(printf '%s\n' "$kChrootPackages" "${lines[@]}")
    [[ ! -f $dir/.blkrig-complete || $(<"$dir/.blkrig-complete") != "$stamp" ]] || return 0
    command -v mmdebstrap >/dev/null || die "'mmdebstrap' not found (run ci/setup, or apt-get install mmdebstrap)"
    rm -rf "$cache/chroots/.$suite.tmp."*
    tmp=$(mktemp -d "$cache/chroots/.$suite.tmp.XXXXXX")
    cleanup_dirs+=("$tmp")
    log "making the $suite build chroot in $dir (mmdebstrap, about a minute)"
    # An empty dir is what mmdebstrap wants as its target; the lock fds are
    # not for it (apt in it failed with "cat >&11: Bad fd number" with them open).
    mmdebstrap --variant=apt \
        --include="$kChrootPackages" \
        "$suite" "$tmp" "${lines[@]}" >&2 7>&- 8>&- 9>&- || die "mmdebstrap of $suite failed (sources: ${lines[*]})"
    echo "$stamp" >"$tmp/.blkrig-complete"
    rm -rf "$dir"
    mv "$tmp" "$dir" || die "cannot move the chroot into $dir"
}

# Downloads PKG=VER into DIR; dies naming the package when the archive lacks it.
fetch_deb() {
    local spec=$1 dir=$2
    (cd "$dir" && apt-get "${apt_opts[@]}" -q download "$spec" >&2) ||
        die "cannot download $spec${suite:+ from $suite}: the archive does not have it (needed to build the extra module for $name)"
}

# The headers packages of the kernel: the flavour's, and the linux-headers-* /
# linux-kbuild-* it depends on, all at the image's version.
header_packages() {
    local flavour=$1
    echo "$flavour"
    apt-cache "${apt_opts[@]}" depends "$flavour" 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-(headers|kbuild)-/ { print $2 }'
}

# build_extra_module MOD: builds MOD for the kernel in $target (a no-op when
# it is there, built from this kernel's package).
build_extra_module() {
    local mod=$1 fsname=${kExtraModules[$1]} release version srcpkg flavour chroot work stamp want_stamp cc
    release=$(<"$target/release")
    version=${want#*=}
    flavour=linux-headers-$release
    # linux-source-6.1, linux-source-6.12: major.minor of the release.
    srcpkg=linux-source-$(sed -E 's/^([0-9]+\.[0-9]+).*/\1/' <<<"$release")
    # The compiler the kernel was built with, as its config names it.
    cc=$(sed -nE 's/^CONFIG_CC_VERSION_TEXT="([^ ]+) .*/\1/p' "$target/config")
    [[ -n $cc ]] || die "$target/config has no CONFIG_CC_VERSION_TEXT: cannot tell which compiler built $name"
    stamp=$target/modules/extra/$fsname.built
    want_stamp="$flavour=$version $srcpkg=$version $cc"
    if [[ -f $target/modules/extra/$fsname.ko && -f $stamp && $(<"$stamp") == "$want_stamp" ]]; then
        log "$name: extra module $mod is built ($fsname.ko, $want_stamp)"
        return 0
    fi
    if grep -qE "^CONFIG_${mod^^}_FS=[ym]" "$target/config"; then
        die "$name already has CONFIG_${mod^^}_FS: no extra module needed"
    fi
    apt-cache "${apt_opts[@]}" policy "$flavour" 2>/dev/null | grep -F " $version " >/dev/null ||
        die "$flavour=$version is not in the archive${suite:+ ($suite)}: the headers must match the fetched kernel $want exactly"
    apt-cache "${apt_opts[@]}" policy "$srcpkg" 2>/dev/null | grep -F " $version " >/dev/null ||
        die "$srcpkg=$version is not in the archive${suite:+ ($suite)}: the source must match the fetched kernel $want"

    suite_chroot "${suite:-$host_suite}"
    chroot=$chroot_dir
    # Built beside the kernel and moved into place: no half module on interrupt.
    work=$(mktemp -d "$cache/kernels/.$name.extra.XXXXXX")
    cleanup_dirs+=("$work" "$chroot/build/$name")
    # apt's _apt sandbox user downloads into it.
    chmod 777 "$work"
    local pkgs=() p
    mapfile -t pkgs < <(header_packages "$flavour")
    for p in "${pkgs[@]}"; do
        log "downloading $p=$version"
        fetch_deb "$p=$version" "$work"
    done
    log "downloading $srcpkg=$version"
    fetch_deb "$srcpkg=$version" "$work"
    # Only their usr/: unpacking lib/modules/*/build straight into the chroot
    # would turn its usr-merged /lib symlink into a directory.
    mkdir "$work/hdr"
    for p in "$work"/linux-headers-*.deb "$work"/linux-kbuild-*.deb; do
        dpkg-deb -x "$p" "$work/hdr" || die "dpkg-deb -x ${p##*/} failed"
    done
    cp -a "$work/hdr/usr/." "$chroot/usr/" || die "cannot copy the headers into $chroot/usr"
    rm -rf "$work/hdr"
    # UTS_RELEASE becomes the module's vermagic: it must be the kernel's.
    local hrel uts=$chroot/usr/src/$flavour/include/generated/utsrelease.h
    hrel=$(sed -nE 's/^#define UTS_RELEASE "(.*)"/\1/p' "$uts" 2>/dev/null) || true
    [[ -n $hrel ]] || die "$flavour=$version has no UTS_RELEASE in $uts"
    [[ $hrel == "$release" ]] || die "$flavour=$version is for release $hrel, the kernel $name is $release"
    [[ -x $chroot/usr/bin/$cc ]] || die "the $name kernel was built with $cc, which the ${suite:-$host_suite} chroot $chroot lacks"

    # Only fs/MOD of the source: the tarball streams out of the .deb (the whole
    # xz is decompressed once, about half a minute).
    local src=$chroot/build/$name
    rm -rf "$src"
    mkdir -p "$src"
    log "unpacking fs/$mod from ${srcpkg}_$version"
    dpkg-deb --fsys-tarfile "$work/${srcpkg}_"*.deb | tar -xO "./usr/src/$srcpkg.tar.xz" |
        tar -xJ -C "$src" --strip-components=3 "$srcpkg/fs/$mod" ||
        die "cannot unpack $srcpkg/fs/$mod from ${srcpkg}_$version"
    rm -f "$work"/*.deb
    build_prepare_"$mod" "$src" "$fsname"
    log "building $fsname.ko for $release with $cc"
    chroot "$chroot" make -s -C "/usr/src/$flavour" M="/build/$name" CC="$cc" "CONFIG_${mod^^}_FS=m" modules >&2 ||
        die "building $mod for $release failed (in $chroot/build/$name)"
    [[ -f $src/$fsname.ko ]] || die "the build left no $fsname.ko in $src"
    local vermagic
    vermagic=$(modinfo -F vermagic "$src/$fsname.ko") || die "modinfo cannot read $src/$fsname.ko"
    [[ $vermagic == "$release "* ]] || die "$fsname.ko has vermagic '$vermagic', not for $release"

    mkdir -p "$target/modules/extra"
    cp "$src/$fsname.ko" "$target/modules/extra/.$fsname.ko.new"
    mv -f "$target/modules/extra/.$fsname.ko.new" "$target/modules/extra/$fsname.ko"
    # depmod -b wants BASE/lib/modules/VERSION.
    mkdir -p "$work/base/lib/modules"
    ln -s "$target/modules" "$work/base/lib/modules/$release"
    PATH=$PATH:/usr/sbin:/sbin depmod -b "$work/base" "$release" || die "depmod for $release failed"
    grep -q "^extra/$fsname.ko:" "$target/modules/modules.dep" || die "depmod did not list extra/$fsname.ko"
    echo "$want_stamp" >"$stamp"
    rm -rf "$src" "$work"
    log "$name: built $target/modules/extra/$fsname.ko (mount -t $fsname)"
}

# fs/ext2 as module ext2mpage registering filesystem "ext2mpage".
build_prepare_ext2() {
    local src=$1 fsname=$2
    sed -i -E "s/^obj-\\\$\\(CONFIG_EXT2_FS\\)[[:space:]]*\\+=[[:space:]]*ext2\\.o/obj-m += $fsname.o/; s/^ext2-/$fsname-/" "$src/Makefile"
    grep -q "^obj-m += $fsname.o" "$src/Makefile" || die "fs/ext2/Makefile has no obj-\$(CONFIG_EXT2_FS) += ext2.o line to rename"
    sed -i -E "s/(\\.name[[:space:]]*=[[:space:]]*)\"ext2\"/\\1\"$fsname\"/; s/MODULE_ALIAS_FS\\(\"ext2\"\\)/MODULE_ALIAS_FS(\"$fsname\")/" "$src/super.c"
    grep -q "\"$fsname\"" "$src/super.c" || die "fs/ext2/super.c has no .name = \"ext2\" to rename"
}
