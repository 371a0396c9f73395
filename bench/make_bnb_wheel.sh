#!/usr/bin/env bash
# A bitsandbytes wheel small enough to carry to the GPU machine (the device tool's 64 MiB cap):
# bitsandbytes 0.50.2 for Python 3.12 with only the CUDA 13.0 library (the machine's torch is
# 2.11.0+cu130) and the CPU one; the other CUDA and ROCm builds (120 MB unpacked) are dropped
# and RECORD is rewritten to match. Writes .whl/ (git-ignored: echo /.whl/ >> .git/info/exclude).
# Used by bench/gpu_qlora.sh (carry [".gpu/plain", ".whl"]).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl /tmp/bnb-full
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_24_x86_64 -d /tmp/bnb-full bitsandbytes==0.50.2
python3 - <<'PY'
import glob, zipfile
src = glob.glob("/tmp/bnb-full/bitsandbytes-0.50.2-*.whl")[0]
dst = ".whl/" + src.split("/")[-1]
keep = lambda n: not (n.startswith("bitsandbytes/libbitsandbytes_")
                      and not n.endswith(("_cuda130.so", "_cpu.so")))
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
    for info in zin.infolist():
        if not keep(info.filename):
            continue
        data = zin.read(info.filename)
        if info.filename.endswith(".dist-info/RECORD"):
            lines = data.decode().splitlines()
            data = ("\n".join(l for l in lines if keep(l.split(",")[0])) + "\n").encode()
        zout.writestr(info, data)
print(dst)
PY
ls -la .whl
