#!/usr/bin/env bash
# Builds bench/device/carry/ (git-ignored): what the lent GPU machine lacks to run `bun run bench gpu` — it has
# no internet and no Bun. Two xz files, together at most 64 MiB (the device tool's carry limit):
#   bun.xz               the Bun binary of this machine (BUN_BIN=... to choose another; linux x64)
#   node_modules.tar.xz  the packages the benchmark loads at run time (onnxruntime-node with its linux-x64
#                        binaries only, onnxruntime-common, sharp with its linux-x64 libvips, and sharp's deps)
#   libvulkan1_*.deb     Debian's Vulkan loader (libvulkan.so.1), for the WebGPU run where the device has none
# onnxruntime's CUDA provider libraries are not carried (~300 MB): bench/device/run.sh takes them from the
# device's Python onnxruntime-gpu package (or SDX_ORT_CUDA_LIBS). Then, from this machine's session:
#   run(command="bash bench/device/run.sh", carry=["bench/device/carry"])
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT="$ROOT/bench/device/carry"
LIMIT=$((64 * 1024 * 1024))
BUN_BIN=${BUN_BIN:-$(readlink -f "$(command -v bun)")}
NM="$ROOT/node_modules"
[ -x "$BUN_BIN" ] || { echo "pack: no bun binary (set BUN_BIN)" >&2; exit 1; }
[ -d "$NM/onnxruntime-node" ] || { echo "pack: run bun install first" >&2; exit 1; }

# The packages `bun bench/index.ts` loads (from `bun build --metafile` of bench/index.ts), plus sharp's native parts.
PACKAGES=(
  onnxruntime-common
  onnxruntime-node/package.json
  onnxruntime-node/dist
  onnxruntime-node/lib
  onnxruntime-node/bin/napi-v6/linux/x64
  sharp
  @img/colour
  @img/sharp-linux-x64
  @img/sharp-libvips-linux-x64
  detect-libc
  semver
)
for p in "${PACKAGES[@]}"; do
  [ -e "$NM/$p" ] || { echo "pack: node_modules/$p is missing" >&2; exit 1; }
done

rm -rf "$OUT"
mkdir -p "$OUT"
echo "pack: $BUN_BIN ($("$BUN_BIN" --version)) -> bun.xz"
xz -T0 -9e -c "$BUN_BIN" >"$OUT/bun.xz"
echo "pack: node_modules (${#PACKAGES[@]} entries) -> node_modules.tar.xz"
(cd "$ROOT" && tar -cf - "${PACKAGES[@]/#/node_modules/}") | xz -T0 -9e -c >"$OUT/node_modules.tar.xz"
echo "pack: Debian's libvulkan1 (the Vulkan loader Dawn opens) -> libvulkan1_*.deb"
(cd "$OUT" && apt-get download libvulkan1) || echo "pack: could not download libvulkan1; the WebGPU run needs the device's own loader" >&2
{
  echo "bun $("$BUN_BIN" --version)"
  echo "onnxruntime-node $(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' "$NM/onnxruntime-node/package.json" | head -1)"
  echo "packed $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$OUT/MANIFEST"

total=$(du -cb "$OUT"/* | tail -1 | cut -f1)
ls -l "$OUT"
echo "pack: $((total / 1024 / 1024)) MiB in $OUT (limit 64 MiB)"
if [ "$total" -gt "$LIMIT" ]; then
  echo "pack: over the 64 MiB carry limit" >&2
  exit 1
fi
