/* Declarations shared by the files of core/grad (never installed): the
 * table of arithmetic kernels a tape calls, one per element type, built from
 * kernels.h. */
#ifndef DFX_CORE_GRAD_INTERNAL_H
#define DFX_CORE_GRAD_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dfx/grad.h"

enum { DFX__G_ADD = 0, DFX__G_SUB, DFX__G_MUL };

/* One convolution call: n images [cin, h, w] -> [cout, ho, wo]; pad is
 * (top, left, bottom, right). */
typedef struct dfx__conv_geom {
    int64_t n, cin, h, w, cout, ho, wo, k, stride;
    int64_t pad[4];
} dfx__conv_geom;

typedef struct dfx__grad_kernels {
    size_t elem_size;
    void (*binary_fw)(int op, const void *a, const void *b, void *y, int64_t n);
    void (*binary_bw)(int op, const void *a, const void *b, const void *dy, void *da, void *db,
                      int64_t n);
    void (*scale_fw)(const void *x, void *y, double s, int64_t n);
    void (*scale_bw)(const void *dy, void *dx, double s, int64_t n);
    void (*unary_fw)(int op, const void *x, void *y, int64_t n);
    void (*unary_bw)(int op, const void *x, const void *y, const void *dy, void *dx, int64_t n);
    void (*add_channel_fw)(const void *x, const void *v, void *y, int64_t n, int64_t c,
                           int64_t rest, bool per_item);
    void (*add_channel_bw)(const void *dy, void *dx, void *dv, int64_t n, int64_t c, int64_t rest,
                           bool per_item);
    void (*accumulate)(const void *src, void *dst, int64_t n);
    void (*transpose12)(const void *x, void *y, int64_t n, int64_t a, int64_t b, bool acc);
    void (*block_copy)(const void *s, int64_t ld_s, int64_t off_s, void *d, int64_t ld_d,
                       int64_t off_d, int64_t n, int64_t len, bool acc);
    void (*upsample2x_fw)(const void *x, void *y, int64_t nc, int64_t h, int64_t w);
    void (*upsample2x_bw)(const void *dy, void *dx, int64_t nc, int64_t h, int64_t w);
    double (*iddpm_vlb)(const void *v, const float *x0, const float *xt, const float *eps,
                        const double *c, const bool *first, int64_t n, int64_t per, void *g);
    void (*mean_rows_fw)(const void *x, void *y, int64_t nc, int64_t hw);
    void (*mean_rows_bw)(const void *dy, void *dx, int64_t nc, int64_t hw);
    void (*embedding_fw)(const void *table, const int64_t *ids, void *y, int64_t n, int64_t dim);
    void (*embedding_bw)(const void *dy, const int64_t *ids, void *dtable, int64_t n, int64_t dim);
    double (*sum)(const void *x, int64_t n);
    void (*fill_add)(void *d, double v, int64_t n);
    double (*mse_fw)(const void *a, const void *b, int64_t n);
    void (*mse_bw)(const void *a, const void *b, double dy, void *da, void *db, int64_t n);
    double (*cross_entropy_fw)(const void *logits, const int64_t *labels, void *p, int64_t n,
                               int64_t k);
    void (*cross_entropy_bw)(const void *p, const int64_t *labels, double dy, void *dlogits,
                             int64_t n, int64_t k);
    void (*linear_fw)(const void *x, const void *w, const void *b, void *y, int64_t rows,
                      int64_t in, int64_t out);
    void (*linear_bw)(const void *x, const void *w, const void *dy, void *dx, void *dw, void *db,
                      int64_t rows, int64_t in, int64_t out);
    int64_t (*conv2d_scratch)(const dfx__conv_geom *g);   /* elements conv2d_fw/bw need */
    void (*conv2d_fw)(const void *x, const void *w, const void *b, void *y,
                      const dfx__conv_geom *g, void *col);
    void (*conv2d_bw)(const void *x, const void *w, const void *dy, void *dx, void *dw, void *db,
                      const dfx__conv_geom *g, void *col);
    void (*norm_fw)(const void *x, const void *gamma, const void *beta, void *y, int64_t sets,
                    int64_t channels, int64_t rest, int64_t groups, double eps, double *stats);
    void (*norm_bw)(const void *x, const void *gamma, const void *dy, void *dx, void *dgamma,
                    void *dbeta, int64_t sets, int64_t channels, int64_t rest, int64_t groups,
                    const double *stats);
    void (*attention_fw)(const void *q, const void *k, const void *v, void *o, void *p, int64_t b,
                         int64_t heads, int64_t nq, int64_t nk, int64_t dh, double scale,
                         bool causal);
    void (*attention_bw)(const void *q, const void *k, const void *v, const void *p,
                         const void *dout, void *dq, void *dk, void *dv, void *dp, int64_t b,
                         int64_t heads, int64_t nq, int64_t nk, int64_t dh, double scale);
} dfx__grad_kernels;

extern const dfx__grad_kernels dfx__grad_kernels_f32;
extern const dfx__grad_kernels dfx__grad_kernels_f64;

/* A recorded operation: its output, inputs, what backward needs. */
typedef struct dfx__node dfx__node;
typedef void (*dfx__backward_fn)(dfx_tape *t, const dfx__node *n);
struct dfx__node {
    dfx__backward_fn backward;
    dfx_var *out;
    dfx_var *in[4];
    int op;
    int64_t i[6];
    double d[2];
    void *saved;           /* tape memory the forward kept */
    const int64_t *ids;    /* copied into tape memory */
    dfx__conv_geom geom;
};

typedef struct dfx__chunk dfx__chunk;

struct dfx_tape {
    dfx_dtype dtype;
    const dfx__grad_kernels *k;
    bool recording;
    dfx_status status;
    char *message;          /* the failure's message */
    dfx__chunk *chunks;     /* newest first */
    size_t bytes, peak;
    dfx__node *nodes;
    int64_t n_nodes, cap_nodes;
    void *scratch;          /* one kernel's temporary (im2col columns) */
    size_t scratch_size;
};

/* Tape memory, 64-byte aligned, valid until reset; NULL (and the tape
 * failed) when memory runs out or the tape already failed. */
void *dfx__tape_alloc(dfx_tape *t, size_t bytes);
/* A temporary of `bytes` for the kernel about to run, reused by the next
 * one; NULL (and the tape failed) when memory runs out. */
void *dfx__tape_scratch(dfx_tape *t, size_t bytes);
/* Records the first failure (status and the current message); returns NULL
 * for the caller to return. */
dfx_var *dfx__tape_fail(dfx_tape *t, dfx_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A new output variable of the given shape; needs a gradient when recording
 * and any of the inputs (NULL-terminated list, up to 4) needs one. */
dfx_var *dfx__tape_out(dfx_tape *t, int ndim, const int64_t *shape, dfx_var *const *in, int n_in);
/* Appends a node for out (when out requires a gradient); NULL otherwise or
 * when the node array cannot grow (the tape has failed then). */
dfx__node *dfx__tape_record(dfx_tape *t, dfx_var *out, dfx__backward_fn bw, dfx_var *const *in,
                            int n_in);
/* v's gradient buffer, allocated zeroed on first use; NULL when v needs
 * no gradient (or v is NULL). */
void *dfx__tape_grad(dfx_tape *t, dfx_var *v);

#endif
