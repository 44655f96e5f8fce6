/* int8 weight-only matrix-vector product for CPU decode (x86-64, AVX-512 F/BW/VL + VNNI).
 *
 *   y[b, n] = scale[n] * sum_k q[n, k] * x[b, k] + bias[n]
 *
 * q is int8 (n_out, k_in), row-major. Each row of x is first rounded to int16 against its own
 * absmax (|xq| <= 2^14 - 1: 14 bits, far finer than the bf16 activations it reads), then
 * vpdpwssd multiplies 32 int16 x int8 pairs per instruction into int32 lanes. Partial sums
 * are flushed to float every BLOCK_K inputs, so the int32 lanes cannot overflow:
 * (BLOCK_K / 32) * 2 * 16383 * 127 < 2^31. Four weight rows are read at a time (four memory
 * streams per thread), which is what brings a 2-core machine close to its memory bandwidth.
 * rgemma/kernels/__init__.py compiles this file on first use; rgemma.quantize falls back to
 * torch kernels when it cannot.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define ROWS 4
#define BLOCK_K 8192
#define PREFETCH 512
#define XMAX 16383.0f

static void quantize_row(const float *x, int64_t k_in, int16_t *xq, float *xscale) {
    float m = 0.f;
    for (int64_t k = 0; k < k_in; k++) m = fmaxf(m, fabsf(x[k]));
    float s = m > 0.f ? m / XMAX : 1.f;
    float inv = 1.f / s;
    for (int64_t k = 0; k < k_in; k++) xq[k] = (int16_t)lrintf(x[k] * inv);
    for (int64_t k = k_in; k < ((k_in + 31) & ~(int64_t)31); k++) xq[k] = 0;
    *xscale = s;
}

static inline __m512i load_w(const int8_t *w, int64_t k, int64_t k_end) {
    int64_t left = k_end - k;
    __m256i v = left >= 32 ? _mm256_loadu_si256((const __m256i *)(w + k))
                           : _mm256_maskz_loadu_epi8((__mmask32)((1ull << left) - 1), w + k);
    return _mm512_cvtepi8_epi16(v);
}

/* sum_k w_r[k] * xq[k] for ROWS rows starting at w (row stride k_in), as floats. */
static void dot_rows(const int8_t *w, int64_t k_in, int nrows, const int16_t *xq, float *acc) {
    for (int r = 0; r < nrows; r++) acc[r] = 0.f;
    for (int64_t k0 = 0; k0 < k_in; k0 += BLOCK_K) {
        int64_t k1 = k0 + BLOCK_K < k_in ? k0 + BLOCK_K : k_in;
        __m512i a[ROWS];
        for (int r = 0; r < ROWS; r++) a[r] = _mm512_setzero_si512();
        for (int64_t k = k0; k < k1; k += 32) {
            __m512i xv = _mm512_loadu_si512(xq + k);
            for (int r = 0; r < nrows; r++) {
                const int8_t *wr = w + r * k_in;
                _mm_prefetch((const char *)(wr + k + PREFETCH), _MM_HINT_T0);
                a[r] = _mm512_dpwssd_epi32(a[r], load_w(wr, k, k1), xv);
            }
        }
        for (int r = 0; r < nrows; r++) acc[r] += (float)_mm512_reduce_add_epi32(a[r]);
    }
}

/* x: (rows, k_in) float32; q: (n_out, k_in) int8; scale: (n_out,) float32; bias: (n_out,)
 * float32 or NULL; y: (rows, n_out) float32. Returns 0, or -1 when out of memory. */
int rgemma_int8_gemv(const float *x, const int8_t *q, const float *scale, const float *bias,
                     float *y, int64_t rows, int64_t n_out, int64_t k_in, int threads) {
    int64_t k_pad = (k_in + 31) & ~(int64_t)31;
    int16_t *xq = aligned_alloc(64, (size_t)(rows * k_pad * 2 + 64) & ~(size_t)63);
    float *xs = malloc(sizeof(float) * rows);
    if (!xq || !xs) { free(xq); free(xs); return -1; }
    for (int64_t b = 0; b < rows; b++) quantize_row(x + b * k_in, k_in, xq + b * k_pad, xs + b);
    int64_t blocks = (n_out + ROWS - 1) / ROWS;
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < blocks; i++) {
        int64_t n = i * ROWS;
        int nrows = n + ROWS <= n_out ? ROWS : (int)(n_out - n);
        float acc[ROWS];
        for (int64_t b = 0; b < rows; b++) {
            dot_rows(q + n * k_in, k_in, nrows, xq + b * k_pad, acc);
            for (int r = 0; r < nrows; r++)
                y[b * n_out + n + r] = acc[r] * xs[b] * scale[n + r] + (bias ? bias[n + r] : 0.f);
        }
    }
    free(xq);
    free(xs);
    return 0;
}

