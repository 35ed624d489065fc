# Shared by the layer scripts (sourced, POSIX sh): the callers set `here` (this folder) and
# `cache` (the harness's cache folder) first.

# The shared libraries (and the loader) an ELF needs, one path a line.
elf_libs() {
    ldd "$1" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
}

# one_binary_layer NAME BINARY STAMP: print the path of the cached layer NAME that holds
# BINARY and the libraries it links, building it unless one is cached for the same STAMP
# (what the layer is made of: package versions, ...), the calling script and this file.
# Older versions of the layer (never anything else in the shared cache) are removed.
one_binary_layer() {
    _name=$1 _bin=$2
    _stamp=$( {
        cat "$0" "$here/lib.sh"
        printf '%s\n' "$3"
    } | sha256sum | cut -c1-16)
    # Our own name in the shared cache (never base-*.cpio, which build-initramfs.sh manages).
    _out="$cache/layer-$_name-$_stamp.cpio"
    if [ -s "$_out" ]; then
        echo "$_out"
        return 0
    fi
    echo "layer $_name: building $_out" >&2
    stage=$(mktemp -d "$cache/layer-stage.XXXXXX")
    trap 'rm -rf "$stage"' EXIT
    for f in "$_bin" $(elf_libs "$_bin"); do
        mkdir -p "$stage$(dirname "$f")"
        cp -L "$f" "$stage$f"
    done
    (cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$_out.tmp.$$"
    mv "$_out.tmp.$$" "$_out"
    for _old in "$cache"/layer-"$_name"-*.cpio; do
        [ "$_old" = "$_out" ] || rm -f "$_old"
    done
    echo "$_out"
}
