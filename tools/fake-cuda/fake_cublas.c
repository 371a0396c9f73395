// A stand-in for libcublas.so with no GPU behind it (see fake_cuda.c, built into the same
// library). A product's arguments are checked as cuBLAS would reject them
// (CUBLAS_STATUS_INVALID_VALUE for a leading dimension too small, CUBLAS_STATUS_NOT_SUPPORTED
// for a dtype combination cublasGemmStridedBatchedEx lacks), and every matrix it would read
// or write, all batches included, must lie inside one live device allocation. With
// FAKE_CUDA_GEMM=compute the product is also computed, on the host (device memory is host
// memory here), by cuBLAS's definition: column-major, `C = α·op(A)·op(B) + β·C` with f32
// accumulation, a half-precision C rounded to nearest even. CubeCL's kernels still do not
// run, so this checks our cuBLAS calls alone (`trainer bench-matmul --check-host`).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int cublasStatus_t;
enum { OK = 0, INVALID_VALUE = 7, NOT_SUPPORTED = 15 };
enum { R_32F = 0, R_16F = 2, R_8I = 3, R_16BF = 14 };
enum { OP_N = 0 };
enum { COMPUTE_32F = 68 };

extern uint64_t fake_cuda_gemms;
int fake_cuda_inside(uintptr_t p, size_t bytes);
FILE *fake_cuda_trace(void);

static int handle_object;

cublasStatus_t cublasCreate_v2(void **handle) {
    *handle = &handle_object;
    return OK;
}
cublasStatus_t cublasDestroy_v2(void *handle) { (void)handle; return OK; }
cublasStatus_t cublasSetStream_v2(void *handle, void *stream) {
    (void)handle; (void)stream;
    return OK;
}
cublasStatus_t cublasSetMathMode(void *handle, int mode) { (void)handle; (void)mode; return OK; }
cublasStatus_t cublasSetWorkspace_v2(void *handle, void *ws, size_t bytes) {
    (void)handle; (void)ws; (void)bytes;
    return OK;
}
const char *cublasGetStatusString(cublasStatus_t s) {
    return s == OK ? "CUBLAS_STATUS_SUCCESS" : "fake cuBLAS: see the message above";
}

static size_t elem_bytes(int t) {
    switch (t) {
    case R_32F: return 4;
    case R_16F: case R_16BF: return 2;
    case R_8I: return 1;
    default: return 0;
    }
}

// The bytes a column-major `rows` x `cols` matrix with leading dimension `ld` spans, over
// `batch` matrices `stride` elements apart.
static size_t span(long rows, long cols, long ld, long long stride, int batch, int t) {
    if (rows == 0 || cols == 0 || batch == 0) return 0;
    return ((size_t)(batch - 1) * (size_t)stride + (size_t)(cols - 1) * (size_t)ld + (size_t)rows) *
           elem_bytes(t);
}

// f32 from a stored element of type t, and back (round to nearest even for half types).
static float load(const void *p, size_t i, int t) {
    if (t == R_32F) return ((const float *)p)[i];
    uint32_t h = ((const uint16_t *)p)[i], bits;
    if (t == R_16BF) {
        bits = h << 16;
    } else { // IEEE half
        uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
        if (exp == 0x1f) {
            bits = sign | 0x7f800000u | (man << 13);
        } else if (exp != 0) {
            bits = sign | ((exp + 112) << 23) | (man << 13);
        } else if (man == 0) {
            bits = sign;
        } else { // subnormal
            exp = 113;
            while (!(man & 0x400)) { man <<= 1; exp--; }
            bits = sign | (exp << 23) | ((man & 0x3ff) << 13);
        }
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static void store(void *p, size_t i, int t, float f) {
    if (t == R_32F) { ((float *)p)[i] = f; return; }
    uint32_t bits;
    memcpy(&bits, &f, 4);
    uint16_t h;
    if (t == R_16BF) {
        h = (bits & 0x7fffffffu) > 0x7f800000u ? (uint16_t)((bits >> 16) | 0x40)
            : (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1)) >> 16);
    } else { // IEEE half, normal range and zeros (what these checks use), else inf
        uint32_t sign = (bits >> 16) & 0x8000u;
        int exp = (int)((bits >> 23) & 0xff) - 112;
        uint32_t man = bits & 0x7fffffu;
        if ((bits & 0x7fffffffu) == 0 || exp <= 0) {
            h = (uint16_t)sign;
        } else if (exp >= 0x1f) {
            h = (uint16_t)(sign | 0x7c00u);
        } else {
            uint32_t v = ((uint32_t)exp << 10) | (man >> 13), rest = man & 0x1fffu;
            if (rest > 0x1000u || (rest == 0x1000u && (v & 1))) v++;
            h = (uint16_t)(sign | v);
        }
    }
    ((uint16_t *)p)[i] = h;
}

// C = alpha·op(A)·op(B) + beta·C, batch by batch, column-major.
static void gemm_on_host(int transa, int transb, int m, int n, int k, float alpha, const void *A,
                         int at, int lda, long long sa, const void *B, int bt, int ldb, long long sb,
                         float beta, void *C, int ct, int ldc, long long sc, int batch) {
    for (int s = 0; s < batch; s++)
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                float acc = 0.0f;
                for (int l = 0; l < k; l++) {
                    size_t ai = (size_t)(s * sa) + (transa == OP_N ? (size_t)i + (size_t)l * lda
                                                                   : (size_t)l + (size_t)i * lda);
                    size_t bi = (size_t)(s * sb) + (transb == OP_N ? (size_t)l + (size_t)j * ldb
                                                                   : (size_t)j + (size_t)l * ldb);
                    acc += load(A, ai, at) * load(B, bi, bt);
                }
                size_t ci = (size_t)(s * sc) + (size_t)i + (size_t)j * ldc;
                float prior = beta != 0.0f ? beta * load(C, ci, ct) : 0.0f;
                store(C, ci, ct, alpha * acc + prior);
            }
}

static cublasStatus_t fail(cublasStatus_t s, const char *why, int ta, int tb, int m, int n,
                           int k, int lda, int ldb, int ldc, long long sa, long long sb,
                           long long sc, int batch, int at, int bt, int ct) {
    fprintf(stderr,
            "fake cuBLAS: cublasGemmStridedBatchedEx rejected (%s): transa %d transb %d m %d n "
            "%d k %d lda %d ldb %d ldc %d strides %lld %lld %lld batch %d types %d %d %d\n",
            why, ta, tb, m, n, k, lda, ldb, ldc, sa, sb, sc, batch, at, bt, ct);
    if (getenv("FAKE_CUDA_ABORT")) abort();
    return s;
}

cublasStatus_t cublasGemmStridedBatchedEx(void *handle, int transa, int transb, int m, int n,
                                          int k, const void *alpha, const void *A, int Atype,
                                          int lda, long long strideA, const void *B, int Btype,
                                          int ldb, long long strideB, const void *beta, void *C,
                                          int Ctype, int ldc, long long strideC, int batch,
                                          int compute, int algo) {
    (void)handle; (void)algo;
#define FAIL(s, why)                                                                        \
    return fail(s, why, transa, transb, m, n, k, lda, ldb, ldc, strideA, strideB, strideC,  \
                batch, Atype, Btype, Ctype)
    if (m < 0 || n < 0 || k < 0 || batch < 0) FAIL(INVALID_VALUE, "negative size");
    long a_rows = transa == OP_N ? m : k, a_cols = transa == OP_N ? k : m;
    long b_rows = transb == OP_N ? k : n, b_cols = transb == OP_N ? n : k;
    if (lda < (a_rows > 1 ? a_rows : 1)) FAIL(INVALID_VALUE, "lda");
    if (ldb < (b_rows > 1 ? b_rows : 1)) FAIL(INVALID_VALUE, "ldb");
    if (ldc < (m > 1 ? m : 1)) FAIL(INVALID_VALUE, "ldc");
    if (compute != COMPUTE_32F) FAIL(NOT_SUPPORTED, "compute type other than 32F");
    int half = Atype == R_16F || Atype == R_16BF;
    int ok = Atype == Btype &&
             ((Atype == R_32F && Ctype == R_32F) || (half && (Ctype == Atype || Ctype == R_32F)));
    if (!ok) FAIL(NOT_SUPPORTED, "dtype combination");
    FILE *trace = fake_cuda_trace();
    if (trace)
        fprintf(trace, "cublas %c%c m %d n %d k %d batch %d types %d %d %d\t%lld\n",
                transa == OP_N ? 'N' : 'T', transb == OP_N ? 'N' : 'T', m, n, k, batch, Atype,
                Btype, Ctype, (long long)m * n * batch);
    if (m == 0 || n == 0 || batch == 0) {
        fake_cuda_gemms++;
        return OK;
    }
    if (!fake_cuda_inside((uintptr_t)A, span(a_rows, a_cols, lda, strideA, batch, Atype)))
        FAIL(INVALID_VALUE, "A outside any allocation");
    if (!fake_cuda_inside((uintptr_t)B, span(b_rows, b_cols, ldb, strideB, batch, Btype)))
        FAIL(INVALID_VALUE, "B outside any allocation");
    if (!fake_cuda_inside((uintptr_t)C, span(m, n, ldc, strideC, batch, Ctype)))
        FAIL(INVALID_VALUE, "C outside any allocation");
    const char *mode = getenv("FAKE_CUDA_GEMM");
    if (mode && strcmp(mode, "compute") == 0)
        gemm_on_host(transa, transb, m, n, k, *(const float *)alpha, A, Atype, lda, strideA, B, Btype,
                ldb, strideB, *(const float *)beta, C, Ctype, ldc, strideC, batch);
    fake_cuda_gemms++;
    return OK;
#undef FAIL
}

cublasStatus_t cublasGemmEx(void *handle, int transa, int transb, int m, int n, int k,
                            const void *alpha, const void *A, int Atype, int lda, const void *B,
                            int Btype, int ldb, const void *beta, void *C, int Ctype, int ldc,
                            int compute, int algo) {
    return cublasGemmStridedBatchedEx(handle, transa, transb, m, n, k, alpha, A, Atype, lda, 0,
                                      B, Btype, ldb, 0, beta, C, Ctype, ldc, 0, 1, compute,
                                      algo);
}
