// A stand-in for libcuda.so.1 with no GPU behind it, for `tools/fake-cuda/check.sh`.
//
// The trainer's CUDA build loads the driver at run time (cudarc's dynamic loading). With this
// library in its place, CubeCL's CUDA runtime runs as on an H200 (compute capability 9.0):
// it generates each kernel's CUDA C++ and compiles it with the real NVRTC, and the PTX comes
// here, where it is counted (and kept, with FAKE_CUDA_PTX_DIR). Kernels and cuBLAS's products
// do not run: a launch is counted and returns. Memory is host memory, so copies work and reads
// return what was written (zeros where nothing was). What this catches: every kernel the step
// launches must compile under NVRTC for sm_90a, as on the GPU (cubecl-cpp writes code that
// lavapipe and WebGPU accept and NVRTC rejects), and the host side must run through with
// CUDA's driver calls. What it cannot: any number a kernel computes. The report at exit gives
// the peak of the memory allocated from the "device": what CubeCL's pools reserve.
//
// Signatures are cuda.h's (the compiler checks them against it). An event's time is the
// host's clock when it was recorded.
#include <cuda.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t n_modules, n_launches, n_allocs, ptx_bytes;
uint64_t fake_cuda_gemms; // counted by fake_cublas.c
FILE *fake_cuda_trace(void);

// FAKE_CUDA_TRACE=PATH: a line for each launch, product and allocation, in order.
FILE *fake_cuda_trace(void) {
    static FILE *trace;
    static int opened;
    if (!opened) {
        opened = 1;
        const char *path = getenv("FAKE_CUDA_TRACE");
        if (path) trace = fopen(path, "w");
    }
    return trace;
}

// A function is its name and what was launched of it, for the census (FAKE_CUDA_CENSUS).
struct function { char *name; uint64_t launches, blocks, threads; };
static struct function **functions;
static size_t n_functions;
static int dummy_object;

// Live allocations, for the cuBLAS stand-in's bounds check (fake_cublas.c).
struct alloc { uintptr_t base; size_t bytes; };
static struct alloc *allocs;
static size_t n_live, cap_live;
static size_t live_bytes, peak_bytes; // what the device's memory would hold (nvidia-smi's, less its context)
static void track(uintptr_t base, size_t bytes) {
    live_bytes += bytes;
    if (live_bytes > peak_bytes) peak_bytes = live_bytes;
    if (n_live == cap_live) {
        cap_live = cap_live ? 2 * cap_live : 1024;
        allocs = realloc(allocs, cap_live * sizeof *allocs);
    }
    allocs[n_live++] = (struct alloc){base, bytes};
}
static void untrack(uintptr_t base) {
    for (size_t i = 0; i < n_live; i++)
        if (allocs[i].base == base) {
            live_bytes -= allocs[i].bytes;
            allocs[i] = allocs[--n_live];
            return;
        }
}
// Whether [p, p + bytes) lies inside one live device allocation.
int fake_cuda_inside(uintptr_t p, size_t bytes) {
    for (size_t i = 0; i < n_live; i++)
        if (p >= allocs[i].base && p + bytes <= allocs[i].base + allocs[i].bytes) return 1;
    return 0;
}

static int by_launches(const void *a, const void *b) {
    uint64_t x = (*(struct function *const *)a)->launches;
    uint64_t y = (*(struct function *const *)b)->launches;
    return x < y ? 1 : x > y ? -1 : 0;
}
// FAKE_CUDA_CENSUS=PATH: each kernel's launches, blocks and threads, most launched first.
static void census(const char *path) {
    FILE *out = fopen(path, "w");
    if (!out) return;
    qsort(functions, n_functions, sizeof *functions, by_launches);
    fprintf(out, "launches\tblocks\tthreads\tkernel\n");
    for (size_t i = 0; i < n_functions; i++)
        if (functions[i]->launches)
            fprintf(out, "%llu\t%llu\t%llu\t%s\n", (unsigned long long)functions[i]->launches,
                    (unsigned long long)functions[i]->blocks,
                    (unsigned long long)functions[i]->threads, functions[i]->name);
    fclose(out);
}
static void report(void) {
    const char *path = getenv("FAKE_CUDA_CENSUS");
    if (path) census(path);
    if (getenv("FAKE_CUDA_QUIET")) return;
    fprintf(stderr,
            "fake-cuda: %llu modules loaded (%llu bytes of PTX), %llu kernel launches, %llu "
            "cuBLAS products, %llu allocations, %.0f MiB peak\n",
            (unsigned long long)n_modules, (unsigned long long)ptx_bytes,
            (unsigned long long)n_launches, (unsigned long long)fake_cuda_gemms,
            (unsigned long long)n_allocs, (double)peak_bytes / (1 << 20));
}

CUresult cuInit(unsigned int flags) {
    (void)flags;
    static int once;
    if (!once) {
        once = 1;
        atexit(report);
    }
    return CUDA_SUCCESS;
}
CUresult cuDriverGetVersion(int *v) { *v = 13000; return CUDA_SUCCESS; }
// FAKE_CUDA_DEVICES=N: as many devices (1 by default), for `--devices 0,1`.
static int device_count(void) {
    const char *n = getenv("FAKE_CUDA_DEVICES");
    return n && atoi(n) > 0 ? atoi(n) : 1;
}
CUresult cuDeviceGetCount(int *n) { *n = device_count(); return CUDA_SUCCESS; }
CUresult cuDeviceGet(CUdevice *d, int ordinal) {
    if (ordinal < 0 || ordinal >= device_count()) return CUDA_ERROR_INVALID_DEVICE;
    *d = ordinal;
    return CUDA_SUCCESS;
}
CUresult cuDeviceGetName(char *name, int len, CUdevice d) {
    (void)d;
    snprintf(name, (size_t)len, "fake-cuda (no GPU; sm_90 as an H200)");
    return CUDA_SUCCESS;
}
CUresult cuDeviceGetUuid_v2(CUuuid *uuid, CUdevice d) {
    (void)d;
    memset(uuid, 0, sizeof *uuid);
    return CUDA_SUCCESS;
}
CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice d) {
    (void)d;
    *bytes = (size_t)140 << 30;
    return CUDA_SUCCESS;
}
CUresult cuMemGetInfo_v2(size_t *free_b, size_t *total) {
    *total = (size_t)140 << 30;
    *free_b = (size_t)130 << 30;
    return CUDA_SUCCESS;
}

// An H200's values (compute capability 9.0); 1 for a capability not listed.
CUresult cuDeviceGetAttribute(int *pi, CUdevice_attribute a, CUdevice d) {
    (void)d;
    switch (a) {
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *pi = 9; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *pi = 0; break;
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *pi = 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X: *pi = 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y: *pi = 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z: *pi = 64; break;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: *pi = 2147483647; break;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y: *pi = 65535; break;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z: *pi = 65535; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: *pi = 49152; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: *pi = 232448; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: *pi = 233472; break;
    case CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY: *pi = 65536; break;
    case CU_DEVICE_ATTRIBUTE_WARP_SIZE: *pi = 32; break;
    case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK: *pi = 65536; break;
    case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR: *pi = 65536; break;
    case CU_DEVICE_ATTRIBUTE_CLOCK_RATE: *pi = 1980000; break;
    case CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE: *pi = 2619000; break;
    case CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH: *pi = 6144; break;
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *pi = 132; break;
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR: *pi = 2048; break;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR: *pi = 32; break;
    case CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE: *pi = 52428800; break;
    case CU_DEVICE_ATTRIBUTE_MAX_PERSISTING_L2_CACHE_SIZE: *pi = 0; break;
    case CU_DEVICE_ATTRIBUTE_PCI_BUS_ID: case CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID:
    case CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID: *pi = 0; break;
    case CU_DEVICE_ATTRIBUTE_INTEGRATED: *pi = 0; break;
    case CU_DEVICE_ATTRIBUTE_TCC_DRIVER: *pi = 0; break;
    case CU_DEVICE_ATTRIBUTE_KERNEL_EXEC_TIMEOUT: *pi = 0; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_MODE: *pi = CU_COMPUTEMODE_DEFAULT; break;
    case CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT: *pi = 2; break;
    case CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT: *pi = 512; break;
    case CU_DEVICE_ATTRIBUTE_TEXTURE_PITCH_ALIGNMENT: *pi = 32; break;
    case CU_DEVICE_ATTRIBUTE_MAX_PITCH: *pi = 2147483647; break;
    default: *pi = 1; break;
    }
    return CUDA_SUCCESS;
}

// Contexts: one, primary.
CUresult cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d) {
    (void)d;
    *c = (CUcontext)&dummy_object;
    return CUDA_SUCCESS;
}
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) { (void)d; return CUDA_SUCCESS; }
CUresult cuDevicePrimaryCtxGetState(CUdevice d, unsigned int *flags, int *active) {
    (void)d;
    *flags = 0;
    *active = 1;
    return CUDA_SUCCESS;
}
CUresult cuCtxSetCurrent(CUcontext c) { (void)c; return CUDA_SUCCESS; }
CUresult cuCtxGetCurrent(CUcontext *c) { *c = (CUcontext)&dummy_object; return CUDA_SUCCESS; }
CUresult cuCtxPushCurrent_v2(CUcontext c) { (void)c; return CUDA_SUCCESS; }
CUresult cuCtxPopCurrent_v2(CUcontext *c) {
    if (c) *c = (CUcontext)&dummy_object;
    return CUDA_SUCCESS;
}
CUresult cuCtxGetDevice(CUdevice *d) { *d = 0; return CUDA_SUCCESS; }
CUresult cuCtxSynchronize(void) { return CUDA_SUCCESS; }
CUresult cuCtxSetLimit(CUlimit l, size_t v) { (void)l; (void)v; return CUDA_SUCCESS; }
CUresult cuCtxGetLimit(size_t *v, CUlimit l) { (void)l; *v = 0; return CUDA_SUCCESS; }
CUresult cuCtxGetApiVersion(CUcontext c, unsigned int *v) {
    (void)c;
    *v = 13000;
    return CUDA_SUCCESS;
}

// Streams: nothing is asynchronous here.
CUresult cuStreamCreate(CUstream *s, unsigned int flags) {
    (void)flags;
    *s = (CUstream)malloc(8);
    return CUDA_SUCCESS;
}
CUresult cuStreamCreateWithPriority(CUstream *s, unsigned int flags, int prio) {
    (void)prio;
    return cuStreamCreate(s, flags);
}
CUresult cuStreamDestroy_v2(CUstream s) { free(s); return CUDA_SUCCESS; }
CUresult cuStreamSynchronize(CUstream s) { (void)s; return CUDA_SUCCESS; }
// "Not ready", as a stream that waits on a flag kernel answers: shared/src/cublas.rs checks
// that CubeCL's stream is the one it found this way, and then takes the path it takes on a GPU.
CUresult cuStreamQuery(CUstream s) { (void)s; return CUDA_ERROR_NOT_READY; }
CUresult cuStreamGetCtx(CUstream s, CUcontext *c) {
    (void)s;
    *c = (CUcontext)&dummy_object;
    return CUDA_SUCCESS;
}
CUresult cuStreamWriteValue32_v2(CUstream s, CUdeviceptr addr, cuuint32_t v, unsigned int f) {
    (void)s; (void)f;
    *(cuuint32_t *)(uintptr_t)addr = v;
    return CUDA_SUCCESS;
}
CUresult cuStreamWaitValue32_v2(CUstream s, CUdeviceptr addr, cuuint32_t v, unsigned int f) {
    (void)s; (void)addr; (void)v; (void)f;
    return CUDA_SUCCESS;
}
CUresult cuStreamWaitEvent(CUstream s, CUevent e, unsigned int f) {
    (void)s; (void)e; (void)f;
    return CUDA_SUCCESS;
}

// Events keep the host's clock when recorded.
static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}
CUresult cuEventCreate(CUevent *e, unsigned int flags) {
    (void)flags;
    double *t = malloc(sizeof *t);
    *t = now_ms();
    *e = (CUevent)t;
    return CUDA_SUCCESS;
}
CUresult cuEventRecord(CUevent e, CUstream s) {
    (void)s;
    *(double *)e = now_ms();
    return CUDA_SUCCESS;
}
CUresult cuEventRecordWithFlags(CUevent e, CUstream s, unsigned int f) {
    (void)f;
    return cuEventRecord(e, s);
}
CUresult cuEventSynchronize(CUevent e) { (void)e; return CUDA_SUCCESS; }
CUresult cuEventQuery(CUevent e) { (void)e; return CUDA_SUCCESS; }
CUresult cuEventElapsedTime_v2(float *ms, CUevent a, CUevent b) {
    *ms = (float)(*(double *)b - *(double *)a);
    return CUDA_SUCCESS;
}
#undef cuEventElapsedTime
CUresult cuEventElapsedTime(float *ms, CUevent a, CUevent b) { return cuEventElapsedTime_v2(ms, a, b); }
CUresult cuEventDestroy_v2(CUevent e) { free(e); return CUDA_SUCCESS; }

// Memory is the host's: calloc'ed, so that untouched pages cost nothing.
CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t bytes) {
    void *m = calloc(1, bytes ? bytes : 1);
    if (!m) return CUDA_ERROR_OUT_OF_MEMORY;
    n_allocs++;
    track((uintptr_t)m, bytes);
    FILE *trace = fake_cuda_trace();
    if (trace) fprintf(trace, "alloc\t%zu\n", bytes);
    *p = (CUdeviceptr)(uintptr_t)m;
    return CUDA_SUCCESS;
}
CUresult cuMemAllocAsync(CUdeviceptr *p, size_t bytes, CUstream s) {
    (void)s;
    return cuMemAlloc_v2(p, bytes);
}
CUresult cuMemFree_v2(CUdeviceptr p) {
    untrack((uintptr_t)p);
    free((void *)(uintptr_t)p);
    return CUDA_SUCCESS;
}
CUresult cuMemFreeAsync(CUdeviceptr p, CUstream s) { (void)s; return cuMemFree_v2(p); }
CUresult cuMemAllocHost_v2(void **p, size_t bytes) {
    *p = malloc(bytes ? bytes : 1);
    return *p ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}
CUresult cuMemHostAlloc(void **p, size_t bytes, unsigned int flags) {
    (void)flags;
    return cuMemAllocHost_v2(p, bytes);
}
CUresult cuMemFreeHost(void *p) { free(p); return CUDA_SUCCESS; }
CUresult cuMemHostRegister_v2(void *p, size_t b, unsigned int f) {
    (void)p; (void)b; (void)f;
    return CUDA_SUCCESS;
}
CUresult cuMemHostUnregister(void *p) { (void)p; return CUDA_SUCCESS; }

#define PTR(x) ((void *)(uintptr_t)(x))
CUresult cuMemcpyHtoD_v2(CUdeviceptr d, const void *h, size_t n) { memcpy(PTR(d), h, n); return CUDA_SUCCESS; }
CUresult cuMemcpyDtoH_v2(void *h, CUdeviceptr d, size_t n) { memcpy(h, PTR(d), n); return CUDA_SUCCESS; }
CUresult cuMemcpyDtoD_v2(CUdeviceptr d, CUdeviceptr s, size_t n) { memmove(PTR(d), PTR(s), n); return CUDA_SUCCESS; }
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void *h, size_t n, CUstream s) {
    (void)s;
    return cuMemcpyHtoD_v2(d, h, n);
}
CUresult cuMemcpyDtoHAsync_v2(void *h, CUdeviceptr d, size_t n, CUstream s) {
    (void)s;
    return cuMemcpyDtoH_v2(h, d, n);
}
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr d, CUdeviceptr src, size_t n, CUstream s) {
    (void)s;
    return cuMemcpyDtoD_v2(d, src, n);
}
CUresult cuMemcpyAsync(CUdeviceptr d, CUdeviceptr src, size_t n, CUstream s) {
    return cuMemcpyDtoDAsync_v2(d, src, n, s);
}
static const char *side(CUmemorytype t, const void *host, CUdeviceptr dev) {
    return t == CU_MEMORYTYPE_HOST ? (const char *)host : (const char *)PTR(dev);
}
CUresult cuMemcpy2DAsync_v2(const CUDA_MEMCPY2D *c, CUstream s) {
    (void)s;
    const char *src = side(c->srcMemoryType, c->srcHost, c->srcDevice);
    char *dst = (char *)side(c->dstMemoryType, c->dstHost, c->dstDevice);
    src += c->srcY * c->srcPitch + c->srcXInBytes;
    dst += c->dstY * c->dstPitch + c->dstXInBytes;
    for (size_t row = 0; row < c->Height; row++)
        memcpy(dst + row * c->dstPitch, src + row * c->srcPitch, c->WidthInBytes);
    return CUDA_SUCCESS;
}
CUresult cuMemcpy2D_v2(const CUDA_MEMCPY2D *c) { return cuMemcpy2DAsync_v2(c, NULL); }
CUresult cuMemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, CUstream s) {
    (void)s;
    memset(PTR(d), v, n);
    return CUDA_SUCCESS;
}
CUresult cuMemsetD8_v2(CUdeviceptr d, unsigned char v, size_t n) { return cuMemsetD8Async(d, v, n, NULL); }
CUresult cuMemsetD32Async(CUdeviceptr d, unsigned int v, size_t n, CUstream s) {
    (void)s;
    unsigned int *p = PTR(d);
    for (size_t i = 0; i < n; i++) p[i] = v;
    return CUDA_SUCCESS;
}
CUresult cuMemsetD32_v2(CUdeviceptr d, unsigned int v, size_t n) { return cuMemsetD32Async(d, v, n, NULL); }

// Modules keep nothing but a count; FAKE_CUDA_PTX_DIR keeps each PTX in a file.
CUresult cuModuleLoadData(CUmodule *m, const void *image) {
    size_t len = strlen((const char *)image);
    n_modules++;
    ptx_bytes += len;
    const char *dir = getenv("FAKE_CUDA_PTX_DIR");
    if (dir) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%05llu.ptx", dir, (unsigned long long)n_modules);
        FILE *f = fopen(path, "w");
        if (f) {
            fwrite(image, 1, len, f);
            fclose(f);
        }
    }
    *m = (CUmodule)&dummy_object;
    return CUDA_SUCCESS;
}
CUresult cuModuleLoadDataEx(CUmodule *m, const void *image, unsigned int n, CUjit_option *o, void **v) {
    (void)n; (void)o; (void)v;
    return cuModuleLoadData(m, image);
}
CUresult cuModuleUnload(CUmodule m) { (void)m; return CUDA_SUCCESS; }
CUresult cuModuleGetFunction(CUfunction *f, CUmodule m, const char *name) {
    (void)m;
    struct function *fn = calloc(1, sizeof *fn);
    fn->name = strdup(name);
    functions = realloc(functions, (n_functions + 1) * sizeof *functions);
    functions[n_functions++] = fn;
    *f = (CUfunction)fn;
    return CUDA_SUCCESS;
}
CUresult cuFuncSetAttribute(CUfunction f, CUfunction_attribute a, int v) {
    (void)f; (void)a; (void)v;
    return CUDA_SUCCESS;
}
CUresult cuFuncGetAttribute(int *v, CUfunction_attribute a, CUfunction f) {
    (void)f;
    *v = a == CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK ? 1024 : 0;
    return CUDA_SUCCESS;
}
CUresult cuFuncSetCacheConfig(CUfunction f, CUfunc_cache c) { (void)f; (void)c; return CUDA_SUCCESS; }
CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
                        unsigned int bx, unsigned int by, unsigned int bz, unsigned int shared,
                        CUstream s, void **params, void **extra) {
    (void)shared; (void)s; (void)params; (void)extra;
    struct function *fn = (struct function *)f;
    fn->launches++;
    fn->blocks += (uint64_t)gx * gy * gz;
    fn->threads += (uint64_t)gx * gy * gz * bx * by * bz;
    n_launches++;
    FILE *trace = fake_cuda_trace();
    if (trace)
        fprintf(trace, "%s\t%llu\n", fn->name,
                (unsigned long long)gx * gy * gz * bx * by * bz);
    return CUDA_SUCCESS;
}

CUresult cuGetErrorString(CUresult e, const char **s) {
    (void)e;
    *s = "fake-cuda error";
    return CUDA_SUCCESS;
}
CUresult cuGetErrorName(CUresult e, const char **s) {
    (void)e;
    *s = "FAKE_CUDA_ERROR";
    return CUDA_SUCCESS;
}

// NVRTC loads the driver where it finds one and asks for its private tables: there are none.
CUresult cuGetExportTable(const void **table, const CUuuid *id) {
    (void)id;
    *table = NULL;
    return CUDA_ERROR_NOT_SUPPORTED;
}
