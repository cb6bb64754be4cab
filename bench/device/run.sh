#!/usr/bin/env bash
# On the lent GPU machine (no internet, no Bun): unpacks bench/device/carry (made by bench/device/pack.sh), puts
# onnxruntime's CUDA provider libraries beside onnxruntime-node's binding, and runs `bun run bench gpu` with the
# arguments given (e.g. --only sd15), once per provider in $SDX_BENCH_PROVIDERS (default "cuda webgpu": the CUDA
# run, then the WebGPU one). Output also goes to $OUT/bench_gpu_<provider>.txt when $OUT is set (the device tool's
# folder that comes back).
#
# WebGPU (Dawn on Vulkan) needs libvulkan.so.1 and the driver's Vulkan ICD: without a loader on the device, the
# carried libvulkan1 .deb is unpacked under $WORK (not /) and put on LD_LIBRARY_PATH; the NVIDIA container ICD
# (/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json) is named in VK_DRIVER_FILES when it is there.
#
# CUDA provider libraries (libonnxruntime_providers_cuda.so, libonnxruntime_providers_shared.so), first found of:
#   1. already beside the binding;  2. $SDX_ORT_CUDA_LIBS (a folder);
#   3. the capi/ folder of Python's onnxruntime (onnxruntime-gpu) package, which must be version 1.30 like
#      onnxruntime-node. The CUDA 12 / cuDNN 9 libraries they need are looked for in the pip nvidia-* packages
#      beside it and in /usr/local/cuda, and added to LD_LIBRARY_PATH.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CARRY="$ROOT/bench/device/carry"
WORK=${SDX_DEVICE_WORK:-/tmp/sdx-device}
mkdir -p "$WORK"
log() { echo "run.sh: $*"; }

unxz_to() { # file → stdout, with xz or else Python's lzma
  if command -v xz >/dev/null 2>&1; then xz -dc "$1"; else
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' "$1"
  fi
}

BUN="$WORK/bun"
if [ ! -x "$BUN" ]; then
  [ -f "$CARRY/bun.xz" ] || { log "no $CARRY/bun.xz: run bench/device/pack.sh and pass carry=[\"bench/device/carry\"]"; exit 1; }
  unxz_to "$CARRY/bun.xz" >"$BUN.tmp" && chmod +x "$BUN.tmp" && mv "$BUN.tmp" "$BUN"
fi
log "bun $("$BUN" --version)"
if [ ! -f "$ROOT/node_modules/onnxruntime-node/package.json" ]; then
  unxz_to "$CARRY/node_modules.tar.xz" | tar -C "$ROOT" -xf - || { log "could not unpack node_modules"; exit 1; }
fi
BIND="$ROOT/node_modules/onnxruntime-node/bin/napi-v6/linux/x64"
LIBS=(libonnxruntime_providers_cuda.so libonnxruntime_providers_shared.so)

have_libs() { [ -f "$1/${LIBS[0]}" ] && [ -f "$1/${LIBS[1]}" ]; }
source_dir=""
if have_libs "$BIND"; then
  source_dir="$BIND"
elif [ -n "${SDX_ORT_CUDA_LIBS:-}" ] && have_libs "$SDX_ORT_CUDA_LIBS"; then
  source_dir="$SDX_ORT_CUDA_LIBS"
else
  for py in python3 python; do
    command -v "$py" >/dev/null 2>&1 || continue
    capi=$("$py" - <<'PY' 2>/dev/null
import importlib.util, os
spec = importlib.util.find_spec("onnxruntime")
print(os.path.join(os.path.dirname(spec.origin), "capi") if spec and spec.origin else "")
PY
)
    if [ -n "$capi" ] && have_libs "$capi"; then
      source_dir="$capi"
      version=$("$py" -c 'import onnxruntime; print(onnxruntime.__version__)' 2>/dev/null || echo "?")
      log "Python onnxruntime $version at $capi"
      case "$version" in 1.30.*) ;; *) log "warning: onnxruntime-node is 1.30.0; provider libraries of $version may not load" ;; esac
      # CUDA / cuDNN from the pip nvidia-* packages (site-packages/nvidia/*/lib) beside onnxruntime.
      site=$(dirname "$(dirname "$capi")")
      for d in "$site"/nvidia/*/lib; do [ -d "$d" ] && LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; done
      break
    fi
  done
fi
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -d "$d" ] && LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"
done
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}"
if [ -n "$source_dir" ] && [ "$source_dir" != "$BIND" ]; then
  for lib in "${LIBS[@]}"; do ln -sf "$source_dir/$lib" "$BIND/$lib"; done
  log "CUDA provider libraries linked from $source_dir"
elif [ -z "$source_dir" ]; then
  log "no CUDA provider libraries found (set SDX_ORT_CUDA_LIBS); the benchmark will say no CUDA"
fi
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L

if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
  deb=$(ls "$CARRY"/libvulkan1_*.deb 2>/dev/null | head -1)
  if [ -n "$deb" ]; then
    mkdir -p "$WORK/vulkan" && dpkg -x "$deb" "$WORK/vulkan"
    export LD_LIBRARY_PATH="$WORK/vulkan/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    log "Vulkan loader unpacked from $(basename "$deb")"
  else
    log "no libvulkan.so.1 and none carried; the WebGPU run will say no WebGPU"
  fi
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$icd" ]; then export VK_DRIVER_FILES="$icd"; fi

cd "$ROOT" || exit 1
out=${OUT:-$WORK}
status=0
for provider in ${SDX_BENCH_PROVIDERS:-cuda webgpu}; do
  "$BUN" bench/index.ts gpu --provider "$provider" --cache "$WORK/cache" "$@" 2>&1 | tee "$out/bench_gpu_$provider.txt"
  code=${PIPESTATUS[0]}
  [ "$code" -ne 0 ] && status=$code
done
exit "$status"
