/* Runs linear_fma.c's NEON entry on the cases read from stdin, for tests/kernels/test_neon.py
 * (cross-compiled for aarch64 and run under qemu-user).
 *
 * Each case on stdin: 8 int64 (rows, n_out, k_in, wk, kinds, threads, has_scale, has_bias),
 * then the raw bytes of x (rows, k_in), w (n_out, k_in), scale (n_out,) if has_scale and bias
 * (n_out,) if has_bias, each in the dtype that wk and kinds give it. For each case stdout gets an
 * int64 status (the entry's return value), then y (rows, n_out) in its dtype.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int rgemma_linear_neon(const void *x, const void *w, int wk, const void *scale, const void *bias, void *y,
                       int64_t rows, int64_t n_out, int64_t k_in, int threads, int kinds);

/* n bytes from stdin into a new buffer (at least one byte long), or exit on a short read. */
static void *read_bytes(int64_t n) {
    void *p = malloc((size_t)n + 1);
    if (!p || fread(p, 1, (size_t)n, stdin) != (size_t)n) {
        fprintf(stderr, "neon_driver: short input\n");
        exit(2);
    }
    return p;
}

static int64_t dtype_size(int bf16) { return bf16 ? 2 : 4; }

/* One case from stdin to stdout; 0 at the end of the input. */
static int run_case(void) {
    int64_t h[8];
    size_t got = fread(h, sizeof h[0], 8, stdin);
    if (got == 0) return 0;
    if (got != 8) read_bytes(1 << 30); /* reports the short read */
    int64_t rows = h[0], n_out = h[1], k_in = h[2], wk = h[3], kinds = h[4];
    int64_t wsize = wk == 1 ? 1 : wk == 2 ? 4 : 2;
    void *x = read_bytes(rows * k_in * dtype_size(kinds & 1));
    void *w = read_bytes(n_out * k_in * wsize);
    void *scale = h[6] ? read_bytes(n_out * dtype_size((kinds >> 1) & 1)) : NULL;
    void *bias = h[7] ? read_bytes(n_out * dtype_size((kinds >> 2) & 1)) : NULL;
    int64_t y_bytes = rows * n_out * dtype_size((kinds >> 3) & 1);
    void *y = calloc((size_t)y_bytes + 1, 1);
    int64_t status = rgemma_linear_neon(x, w, (int)wk, scale, bias, y, rows, n_out, k_in, (int)h[5], (int)kinds);
    fwrite(&status, sizeof status, 1, stdout);
    fwrite(y, 1, (size_t)y_bytes, stdout);
    free(x), free(w), free(scale), free(bias), free(y);
    return 1;
}

int main(void) {
    while (run_case()) {
    }
    return fflush(stdout) != 0;
}
