#!/bin/sh
# Regenerate the build system from configure.ac and Makefile.am.
set -e
cd "$(dirname "$0")"
for tool in autoreconf pkg-config; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "autogen.sh: $tool is missing: install the Debian packages autoconf automake libtool pkg-config" >&2
        exit 1
    }
done
mkdir -p m4 build-aux
autoreconf --install --force
echo "Now run ./configure && make"
