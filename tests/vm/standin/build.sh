#!/bin/sh
# Build the harness-only stand-in handler (static, so it needs no libraries in the guest)
# and print its path. Usage: tests/vm/run-vm.sh "$(tests/vm/standin/build.sh)" SCENARIO...
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/../.cache/tcmu-vm-standin"
if [ ! -x "$out" ] || [ "$here/standin.c" -nt "$out" ]; then
    cc -O2 -Wall -Wextra -Werror -static -o "$out.tmp" "$here/standin.c"
    mv "$out.tmp" "$out"
fi
echo "$out"
