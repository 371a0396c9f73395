# Sourced (`. tools/fake-cuda/env.sh`, from the repository's root): NVRTC 13.0 and CUDA's headers
# from NVIDIA's wheels on PyPI (about 95 MB, checked against their sha256, kept in
# ~/.cache/law-polyglot/cuda-13.0; curl and unzip, installed with apt if missing, no Python), the stand-in libcuda/libcublas
# built from fake_cuda.c and fake_cublas.c, and CUDA_PATH and LD_LIBRARY_PATH exported so that
# a trainer built with `--features cuda` runs on them. check.sh sources it; so can a dry run of
# the GPU scripts (bench/README.md).
log() { printf '[fake-cuda] %s\n' "$*" >&2; }

CACHE="${LAW_CUDA_CACHE:-$HOME/.cache/law-polyglot/cuda-13.0}"

# name, version and platform tag of each wheel, and its sha256
WHEELS="
nvidia_cuda_nvrtc-13.0.88-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl ad9b6d2ead2435f11cbb6868809d2adeeee302e9bb94bcf0539c7a40d80e8575
nvidia_cuda_runtime-13.0.96-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl 7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548
nvidia_cuda_crt-13.0.88-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl 2c8043c7c9e02492716426e9919fc78d2c5b3b2a7a768a88e952676b08aa55a4
nvidia_cuda_cccl-13.0.85-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl e0da7ad981f3a8aff08241b5bfc1af868742a63e2762f53a5171c492ef242649
"

fetch() {
  local file=$1 sum=$2 project url
  [ -f "$CACHE/wheels/$file" ] && return 0
  project=$(echo "$file" | cut -d- -f1 | tr _ -)
  url=$(curl -fsSL "https://pypi.org/simple/$project/" | grep -o "https://[^\"#]*/$file" | head -n 1) || true
  if [ -z "$url" ]; then
    log "cannot find $file on PyPI"
    return 1
  fi
  log "downloading $file"
  curl -fsSL -o "$CACHE/wheels/$file.part" "$url"
  echo "$sum  $CACHE/wheels/$file.part" | sha256sum -c --quiet
  mv "$CACHE/wheels/$file.part" "$CACHE/wheels/$file"
}

if [ ! -f "$CACHE/ready" ]; then
  if ! command -v unzip >/dev/null; then
    log "installing unzip (apt)"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq unzip
  fi
  mkdir -p "$CACHE/wheels"
  echo "$WHEELS" | while read -r file sum; do
    if [ -n "$file" ]; then fetch "$file" "$sum"; fi
  done
  rm -rf "$CACHE/root"
  for w in "$CACHE"/wheels/*.whl; do unzip -qo "$w" 'nvidia/*' -d "$CACHE/root"; done
  touch "$CACHE/ready"
fi
CUDA="$CACHE/root/nvidia/cu13"

# the stand-in driver and cuBLAS, one library under both names
FAKE="$CACHE/fake"
mkdir -p "$FAKE"
cc -shared -fPIC -O1 -Wall -Wextra -Werror -I"$CUDA/include" \
  tools/fake-cuda/fake_cuda.c tools/fake-cuda/fake_cublas.c -o "$FAKE/libfakecuda.so"
for name in libcuda.so libcuda.so.1 libcublas.so libcublas.so.13; do
  ln -sf libfakecuda.so "$FAKE/$name"
done

export CUDA_PATH="$CUDA"
export LD_LIBRARY_PATH="$FAKE:$CUDA/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
