#!/usr/bin/env bash
# usage: check.sh BUILD_DIR [CC]
# Installs the build into a scratch prefix and builds tests/install/hello.c
# against it twice: with pkg-config and with find_package(kiln).
set -euo pipefail
build="$1"; cc="${2:-cc}"
here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null

# pkg-config (the .pc is relocatable: it finds its prefix from its own path)
export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig"
"$cc" -std=c17 -Wall -Werror "$here/hello.c" -o "$tmp/hello_pc" $(pkg-config --cflags --libs --static kiln)
LD_LIBRARY_PATH="$(pkg-config --variable=libdir kiln)" "$tmp/hello_pc"

# Loaded with dlopen, as a language binding would. Debian's jemalloc (which
# the library links) cannot itself be dlopen'ed (its TLS is initial-exec),
# so this program links it at start, as such a host must.
"$cc" -std=c17 -Wall -Werror "$here/dlopen.c" -o "$tmp/dlopen" $(pkg-config --cflags kiln) \
  -Wl,--no-as-needed $(pkg-config --libs jemalloc) -Wl,--as-needed -ldl
"$tmp/dlopen" "$(pkg-config --variable=libdir kiln)/libkiln.so.0"

# CMake package
mkdir -p "$tmp/proj"
cat > "$tmp/proj/CMakeLists.txt" <<CM
cmake_minimum_required(VERSION 3.20)
project(hello C)
find_package(kiln REQUIRED)
add_executable(hello $here/hello.c)
add_executable(hello_shared $here/hello.c)
target_link_libraries(hello PRIVATE kiln::kiln_static)
target_link_libraries(hello_shared PRIVATE kiln::kiln_shared)
CM
cmake -S "$tmp/proj" -B "$tmp/proj/build" -DCMAKE_PREFIX_PATH="$tmp/prefix" -DCMAKE_C_COMPILER="$cc" >/dev/null
cmake --build "$tmp/proj/build" >/dev/null
"$tmp/proj/build/hello"
"$tmp/proj/build/hello_shared"
