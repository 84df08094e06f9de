#!/bin/sh
# Build (or reuse) the cached qemu guest; see build.py --help.
exec python3 "$(dirname "$0")/build.py" "$@"
