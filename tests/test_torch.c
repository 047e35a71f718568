/* torch checkpoints through dfx_weights: the files tools/gen_torch_test_files.py
 * wrote with torch 1.13 (both formats, a ZIP64 rewrite), their values
 * recomputed here from the script's formulas; damaged archives; hostile
 * pickles built opcode by opcode, each refused with its message and none
 * executed; and the unpickler's protocol 0 text opcodes.
 *
 * usage: test_torch DFX_EXECUTABLE */
#include <ftw.h>
#include <stdint.h>
#include <sys/stat.h>

#include "core/internal.h"
#include "testutil.h"

static char tmpdir[64];
static const char *dfx_exe;

static const char *data_file(const char *name)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/tests/data/torch/%s", DFX_SOURCE_ROOT, name);
    return buf;
}

static const char *in_tmp(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", tmpdir, name);
    return buf;
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *fp = fopen(path, "wb");
    ck_assert_msg(fp != NULL, "cannot create %s", path);
    if (n)
        ck_assert_uint_eq(fwrite(p, 1, n, fp), n);
    ck_assert_int_eq(fclose(fp), 0);
}

static unsigned char *read_bytes(const char *path, size_t *n)
{
    char *data;
    ck_assert_msg(dfx__read_file(path, &data, n) == DFX_OK, "%s", dfx_error_message());
    return (unsigned char *)data;
}

static dfx_weights *open_ok(const char *path)
{
    dfx_weights *w = NULL;
    dfx_status st = dfx_weights_open(&w, path);
    ck_assert_msg(st == DFX_OK, "%s: %s", path, dfx_error_message());
    return w;
}

/* Opening path must fail with `want` and a message naming the file and
 * holding `sub`. */
static void expect_open_error(const char *path, dfx_status want, const char *sub)
{
    dfx_weights *w = (dfx_weights *)&w;
    dfx_status got = dfx_weights_open(&w, path);
    const char *msg = dfx_error_message();
    ck_assert_msg(got == want, "%s: status %d, want %d (%s)", path, got, want, msg);
    ck_assert_ptr_null(w);
    ck_assert_msg(strncmp(msg, path, strlen(path)) == 0, "message \"%s\" does not start with "
                  "the file", msg);
    ck_assert_msg(strstr(msg, sub), "message \"%s\" lacks \"%s\"", msg, sub);
}

/* ---- the generated checkpoints ------------------------------------------ */

static float *load(dfx_weights *w, const char *name, int ndim, const int64_t *shape)
{
    float *v = NULL;
    dfx_status st = dfx_weights_load(w, name, ndim, shape, &v);
    ck_assert_msg(st == DFX_OK, "%s: %s", name, dfx_error_message());
    return v;
}

static void expect_view(dfx_weights *w, const char *name, dfx_dtype dtype, int ndim,
                        const int64_t *shape, dfx_tensor *v)
{
    ck_assert_msg(dfx_weights_view(w, name, v) == DFX_OK, "%s", dfx_error_message());
    ck_assert_msg(v->dtype == dtype, "%s: dtype %s", name, dfx_dtype_name(v->dtype));
    ck_assert_int_eq(v->ndim, ndim);
    for (int i = 0; i < ndim; i++)
        ck_assert_int_eq(v->shape[i], shape[i]);
}

/* The state dict of gen_torch_test_files.py's state_dict(), in its order. */
static const char *const nested_names[] = {
    "f32", "f16", "bf16", "f64", "i64", "i32", "mask", "transposed", "expanded",
    "scalar", "empty", "param", "shared_a", "shared_b",
};
enum { NESTED_COUNT = sizeof nested_names / sizeof *nested_names };

static void check_nested(const char *path, const char *format)
{
    dfx_weights *w = open_ok(path);
    ck_assert_str_eq(dfx_weights_format(w), format);
    ck_assert_int_eq(dfx_weights_count(w), NESTED_COUNT);
    for (int i = 0; i < NESTED_COUNT; i++)
        ck_assert_str_eq(dfx_weights_name(w, i), nested_names[i]);
    ck_assert_ptr_null(dfx_weights_name(w, NESTED_COUNT));
    /* beside the state dict: numbers, numpy scalars, a callback object, a
     * set, and a tensor outside "state_dict" that must not be taken */
    static const char *const absent[] = {"epoch", "global_step", "numpy_step", "callbacks",
                                         "checkpoint_callback", "tags", "outside",
                                         "best_model_score", "state_dict", "_metadata"};
    for (size_t i = 0; i < sizeof absent / sizeof *absent; i++)
        ck_assert_msg(!dfx_weights_has(w, absent[i]), "%s", absent[i]);

    dfx_tensor v;
    float *x;
    const int64_t s234[] = {2, 3, 4}, s34[] = {3, 4}, s16[] = {16}, s5[] = {5}, s10[] = {10},
                  s6[] = {6}, s3[] = {3}, s43[] = {4, 3}, s03[] = {0, 3}, s23[] = {2, 3},
                  s25[] = {2, 5};

    expect_view(w, "f32", DFX_DTYPE_F32, 3, s234, &v);
    x = load(w, "f32", 3, s234);
    for (int k = 0; k < 24; k++)
        ck_assert_float_eq(x[k], k * 0.25f - 1);
    free(x);

    expect_view(w, "f16", DFX_DTYPE_F16, 2, s34, &v);
    x = load(w, "f16", 2, s34);
    for (int k = 0; k < 12; k++)
        ck_assert_float_eq(x[k], k * 0.5f - 3);
    free(x);

    expect_view(w, "bf16", DFX_DTYPE_BF16, 1, s16, &v);
    x = load(w, "bf16", 1, s16);
    for (int k = 0; k < 16; k++)
        ck_assert_float_eq(x[k], (float)(k - 8));
    free(x);

    expect_view(w, "f64", DFX_DTYPE_F64, 1, s5, &v);
    x = load(w, "f64", 1, s5);
    for (int k = 0; k < 5; k++)
        ck_assert_float_eq(x[k], k / 8.0f);
    free(x);

    /* int64 exactly through the view; float32 through load */
    expect_view(w, "i64", DFX_DTYPE_I64, 1, s10, &v);
    for (int k = 0; k < 10; k++) {
        int64_t got;
        memcpy(&got, (const char *)v.data + 8 * k, 8);
        ck_assert_int_eq(got, (int64_t)k * 1000000007 - 3);
    }
    x = load(w, "i64", 1, s10);
    for (int k = 0; k < 10; k++)
        ck_assert_float_eq(x[k], (float)((int64_t)k * 1000000007 - 3));
    free(x);

    expect_view(w, "i32", DFX_DTYPE_I32, 1, s6, &v);
    x = load(w, "i32", 1, s6);
    for (int k = 0; k < 6; k++)
        ck_assert_float_eq(x[k], (float)(k - 2));
    free(x);

    expect_view(w, "mask", DFX_DTYPE_BOOL, 1, s3, &v);
    x = load(w, "mask", 1, s3);
    ck_assert(x[0] == 1 && x[1] == 0 && x[2] == 1);
    free(x);

    /* strides (1, 4): element [i][j] of the transpose is j * 4 + i */
    expect_view(w, "transposed", DFX_DTYPE_F32, 2, s43, &v);
    x = load(w, "transposed", 2, s43);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++)
            ck_assert_float_eq(x[i * 3 + j], (float)(j * 4 + i));
    free(x);

    /* stride 0 along the first dimension */
    expect_view(w, "expanded", DFX_DTYPE_F32, 2, s43, &v);
    x = load(w, "expanded", 2, s43);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++)
            ck_assert_float_eq(x[i * 3 + j], (float)j);
    free(x);

    expect_view(w, "scalar", DFX_DTYPE_F32, 0, NULL, &v);
    x = load(w, "scalar", 0, NULL);
    ck_assert_float_eq(x[0], 3.25f);
    free(x);

    expect_view(w, "empty", DFX_DTYPE_F32, 2, s03, &v);
    free(load(w, "empty", 2, s03));

    expect_view(w, "param", DFX_DTYPE_F32, 2, s23, &v);
    x = load(w, "param", 2, s23);
    for (int k = 0; k < 6; k++)
        ck_assert_float_eq(x[k], (float)(k + 100));
    free(x);

    /* one storage, base[k] = 2k, viewed at offsets 2 and 10: the views lie
     * 8 elements apart in the file */
    dfx_tensor a, b;
    expect_view(w, "shared_a", DFX_DTYPE_F32, 1, s5, &a);
    expect_view(w, "shared_b", DFX_DTYPE_F32, 2, s25, &b);
    ck_assert_int_eq((const char *)b.data - (const char *)a.data, 8 * 4);
    x = load(w, "shared_a", 1, s5);
    for (int k = 0; k < 5; k++)
        ck_assert_float_eq(x[k], (float)(2 * (2 + k)));
    free(x);

    /* every tensor but shared_b is used: check_used names it */
    ck_assert_int_eq(dfx_weights_check_used(w, ""), DFX_ERR_FORMAT);
    ck_assert_msg(strstr(dfx_error_message(), "1 tensor is not used by the model: 'shared_b'"),
                  "%s", dfx_error_message());
    x = load(w, "shared_b", 2, s25);
    for (int k = 0; k < 10; k++)
        ck_assert_float_eq(x[k], (float)(2 * (10 + k)));
    free(x);
    ck_assert_msg(dfx_weights_check_used(w, "") == DFX_OK, "%s", dfx_error_message());

    /* the loader's own errors keep naming the file */
    float *none = NULL;
    ck_assert_int_eq(dfx_weights_load(w, "f32", 2, s34, &none), DFX_ERR_FORMAT);
    ck_assert_msg(strstr(dfx_error_message(), "tensor 'f32' has shape [2,3,4] but the model "
                         "expects [3,4]"), "%s", dfx_error_message());
    ck_assert_int_eq(dfx_weights_load(w, "nope", 2, s34, &none), DFX_ERR_NOT_FOUND);
    ck_assert_int_eq(dfx_weights_view(w, "nope", &v), DFX_ERR_NOT_FOUND);
    ck_assert_msg(strncmp(dfx_error_message(), path, strlen(path)) == 0, "%s",
                  dfx_error_message());
    ck_assert_str_eq(dfx_weights_path(w), path);
    dfx_weights_close(w);
}

START_TEST(test_nested_zip)
{
    check_nested(data_file("nested_zip.ckpt"), "torch zip");
}
END_TEST

START_TEST(test_nested_legacy)
{
    check_nested(data_file("nested_legacy.ckpt"), "torch legacy");
}
END_TEST

START_TEST(test_zip64)
{
    check_nested(data_file("zip64.ckpt"), "torch zip");
}
END_TEST

/* diffusers-style state dicts: zip at protocol 4 (FRAME, STACK_GLOBAL,
 * MEMOIZE), legacy at protocols 1 (no PROTO, a text LONG magic) and 5 */
START_TEST(test_plain)
{
    static const char *const files[] = {"plain_zip_p4.bin", "plain_legacy_p1.pt",
                                        "plain_legacy_p5.pth"};
    for (size_t f = 0; f < sizeof files / sizeof *files; f++) {
        dfx_weights *w = open_ok(data_file(files[f]));
        ck_assert_int_eq(dfx_weights_count(w), 3);
        const int64_t sw[] = {2, 3, 3, 3}, sb[] = {2}, sn[] = {4};
        float *x = load(w, "conv.weight", 4, sw);
        for (int k = 0; k < 54; k++)
            ck_assert_float_eq(x[k], (float)k / 10);
        free(x);
        x = load(w, "conv.bias", 1, sb);
        ck_assert(x[0] == 0.5f && x[1] == -0.5f);
        free(x);
        dfx_tensor v;
        expect_view(w, "norm.weight", DFX_DTYPE_F16, 1, sn, &v);
        x = load(w, "norm.weight", 1, sn);
        for (int k = 0; k < 4; k++)
            ck_assert_float_eq(x[k], (float)k);
        free(x);
        ck_assert_msg(dfx_weights_check_used(w, "") == DFX_OK, "%s", dfx_error_message());
        dfx_weights_close(w);
    }
}
END_TEST

/* The format comes from the bytes, not the name. */
START_TEST(test_detect_by_content)
{
    char path[256];
    size_t n;
    unsigned char *zip = read_bytes(data_file("plain_zip_p4.bin"), &n);
    write_bytes(in_tmp(path, sizeof path, "model.safetensors"), zip, n);
    dfx_weights *w = open_ok(path);
    ck_assert_str_eq(dfx_weights_format(w), "torch zip");
    dfx_weights_close(w);
    free(zip);

    /* a safetensors file with a 128-byte header: its first byte is 0x80,
     * PROTO's, and its ninth is the header's '{' */
    const dfx_tensor *t[1];
    const char *names[1] = {"x"};
    dfx_tensor *x;
    const int64_t shape[] = {3};
    ck_assert_int_eq(dfx_tensor_create(&x, DFX_DTYPE_F32, 1, shape), DFX_OK);
    t[0] = x;
    const char *key[1] = {"pad"};
    char value[80];
    bool tested = false;
    for (int len = 0; len < 60 && !tested; len++) {
        memset(value, 'p', (size_t)len);
        value[len] = '\0';
        const char *val[1] = {value};
        ck_assert_int_eq(dfx_safetensors_write(in_tmp(path, sizeof path, "w.ckpt"), 1, names, t,
                                               1, key, val), DFX_OK);
        size_t size;
        unsigned char *img = read_bytes(path, &size);
        bool hit = img[0] == 0x80 && img[1] == 0;
        free(img);
        if (!hit)
            continue;
        w = open_ok(path);
        ck_assert_str_eq(dfx_weights_format(w), "safetensors");
        ck_assert_int_eq(dfx_weights_count(w), 1);
        dfx_weights_close(w);
        tested = true;
    }
    ck_assert(tested);
    dfx_tensor_destroy(x);
}
END_TEST

/* ---- damaged files ------------------------------------------------------ */

START_TEST(test_damaged)
{
    expect_open_error(data_file("bad_truncated.ckpt"), DFX_ERR_FORMAT,
                      "no zip end of central directory record");
    expect_open_error(data_file("bad_central.ckpt"), DFX_ERR_FORMAT,
                      "is not a central directory header");
    expect_open_error(data_file("bad_outside.ckpt"), DFX_ERR_FORMAT,
                      "points outside the file's data");
    expect_open_error(data_file("bad_compressed.ckpt"), DFX_ERR_UNSUPPORTED,
                      "is compressed (method 8, deflate)");
    expect_open_error(data_file("bad_short_storage.ckpt"), DFX_ERR_FORMAT,
                      "a storage too short for its tensor");

    char path[256];
    size_t n;
    unsigned char *img = read_bytes(data_file("nested_legacy.ckpt"), &n);
    write_bytes(in_tmp(path, sizeof path, "short.pt"), img, n - 10);
    expect_open_error(path, DFX_ERR_FORMAT, "runs past the end of the file");
    write_bytes(path, img, n / 2);
    expect_open_error(path, DFX_ERR_FORMAT, "truncated");
    free(img);

    /* a flipped byte inside data.pkl (the first entry, whose local header
     * is at offset 0) */
    img = read_bytes(data_file("plain_zip_p4.bin"), &n);
    size_t data = 30 + (img[26] | (size_t)img[27] << 8) + (img[28] | (size_t)img[29] << 8);
    img[data + 20] ^= 0x01;
    write_bytes(in_tmp(path, sizeof path, "crc.bin"), img, n);
    expect_open_error(path, DFX_ERR_FORMAT, "fails its CRC check");
    free(img);

    write_bytes(in_tmp(path, sizeof path, "empty.ckpt"), "PK\x05\x06", 4);
    expect_open_error(path, DFX_ERR_FORMAT, "too short for its end record");
}
END_TEST

/* ---- hostile pickles ---------------------------------------------------- */

typedef struct pk {
    unsigned char *b;
    size_t n, cap;
} pk;

static void pk_raw(pk *p, const void *d, size_t n)
{
    if (p->n + n > p->cap) {
        p->cap = (p->n + n) * 2 + 64;
        p->b = realloc(p->b, p->cap);
        ck_assert_ptr_nonnull(p->b);
    }
    memcpy(p->b + p->n, d, n);
    p->n += n;
}

static void pk_cstr(pk *p, const char *s)
{
    pk_raw(p, s, strlen(s));
}

/* A string literal's bytes, NULs included. */
#define PK(p, lit) pk_raw((p), (lit), sizeof(lit) - 1)

/* BINUNICODE */
static void pk_str(pk *p, const char *s)
{
    uint32_t n = (uint32_t)strlen(s);
    unsigned char len[5] = {'X', (unsigned char)n, (unsigned char)(n >> 8),
                            (unsigned char)(n >> 16), (unsigned char)(n >> 24)};
    pk_raw(p, len, 5);
    pk_raw(p, s, n);
}

static void pk_global(pk *p, const char *module, const char *name)
{
    PK(p, "c");
    pk_cstr(p, module);
    PK(p, "\n");
    pk_cstr(p, name);
    PK(p, "\n");
}

static char pwned[256];

/* os.system("touch <tmpdir>/pwned") */
static void pk_touch(pk *p)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "touch %s", pwned);
    pk_global(p, "os", "system");
    pk_str(p, cmd);
    PK(p, "\x85R");
}

typedef void (*pk_fn)(pk *p);

static void h_os_system(pk *p)
{
    PK(p, "\x80\x02");
    pk_touch(p);
    PK(p, ".");
}

static void h_builtins_eval(pk *p)
{
    PK(p, "\x80\x02");
    pk_global(p, "builtins", "eval");
    pk_str(p, "__import__('os').system('true')");
    PK(p, "\x85R.");
}

static void h_py2_builtin_eval(pk *p)
{
    PK(p, "\x80\x02");
    pk_global(p, "__builtin__", "eval");
    pk_str(p, "1");
    PK(p, "\x85R.");
}

static void h_builtins_exec(pk *p)
{
    PK(p, "\x80\x02");
    pk_global(p, "builtins", "exec");
    pk_str(p, "1");
    PK(p, "\x85R.");
}

static void h_posix_system(pk *p)
{
    PK(p, "\x80\x02");
    pk_global(p, "posix", "system");
    pk_str(p, "true");
    PK(p, "\x85R.");
}

static void h_nt_system(pk *p)
{
    PK(p, "\x80\x02");
    pk_global(p, "nt", "system");
    pk_str(p, "true");
    PK(p, "\x85R.");
}

static void h_subprocess(pk *p)
{
    PK(p, "\x80\x02");
    pk_global(p, "subprocess", "Popen");
    PK(p, "](");
    pk_str(p, "touch");
    pk_str(p, pwned);
    PK(p, "e\x85R.");
}

static void h_getattr(pk *p)
{
    PK(p, "\x80\x02");
    pk_global(p, "builtins", "getattr");
    PK(p, ".");
}

static void h_load_from_bytes(pk *p)
{
    PK(p, "\x80\x02");
    pk_global(p, "torch.storage", "_load_from_bytes");
    PK(p, "C\x01x\x85R.");
}

static void h_copyreg(pk *p)
{
    PK(p, "\x80\x02");
    pk_global(p, "copyreg", "_reconstructor");
    PK(p, ".");
}

/* protocol 4: FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL */
static void h_stack_global(pk *p)
{
    PK(p, "\x80\x04\x95\x1c\x00\x00\x00\x00\x00\x00\x00");
    PK(p, "\x8c\x02os\x94\x8c\x06system\x94\x93\x94\x8c\x04true\x94\x85\x94R\x94.");
}

static void h_stack_global_eval(pk *p)
{
    PK(p, "\x80\x04\x8c\x08" "builtins\x8c\x04" "eval\x93\x8c\x01" "1\x85R.");
}

/* the names fetched from the memo, not from the GLOBAL line */
static void h_memo_names(pk *p)
{
    PK(p, "\x80\x04\x8c\x02os\x94" "0\x8c\x06system\x94" "0h\x00h\x01\x93");
    pk_str(p, "true");
    PK(p, "\x85R.");
}

/* os.system as the backward_hooks of an otherwise valid tensor rebuild, in
 * a state dict: refused when its GLOBAL is read, before the tensor is built */
static void h_in_tensor(pk *p)
{
    PK(p, "\x80\x02}(");
    pk_str(p, "w");
    pk_global(p, "torch._utils", "_rebuild_tensor_v2");
    PK(p, "((");
    pk_str(p, "storage");
    pk_global(p, "torch", "FloatStorage");
    pk_str(p, "0");
    pk_str(p, "cpu");
    PK(p, "K\x01tQK\x00K\x01\x85K\x01\x85\x89");
    pk_touch(p);
    PK(p, "tRu.");
}

/* the storage type of a persistent id */
static void h_in_persid(pk *p)
{
    PK(p, "\x80\x02(");
    pk_str(p, "storage");
    pk_global(p, "os", "system");
    pk_str(p, "0");
    pk_str(p, "cpu");
    PK(p, "K\x01tQ.");
}

/* INST: the class named inline, instantiated from a MARK */
static void h_inst(pk *p)
{
    PK(p, "\x80\x02(");
    pk_str(p, "true");
    PK(p, "ios\nsystem\n.");
}

static void h_newline_name(pk *p)
{
    PK(p, "\x80\x04\x8c\x0dtorch._utils\n\x8c\x12_rebuild_tensor_v2\x93.");
}

/* Cyrillic 'о' (U+043E) for the o of os */
static void h_unicode_module(pk *p)
{
    PK(p, "\x80\x04\x8c\x03\xd0\xbes\x8c\x06system\x93.");
}

static void h_long_name(pk *p)
{
    PK(p, "\x80\x02" "c");
    for (int i = 0; i < 100000; i++)
        PK(p, "a");
    PK(p, "\nsystem\n.");
}

static void h_ext1(pk *p)
{
    PK(p, "\x80\x02\x82\x01.");
}

/* REDUCE of something that is not a global: a dict */
static void h_call_dict(pk *p)
{
    PK(p, "\x80\x02})R.");
}

/* an allowed callable's result called again */
static void h_call_result(pk *p)
{
    PK(p, "\x80\x02");
    pk_global(p, "numpy", "dtype");
    PK(p, ")R)R.");
}

/* a memo index no pickler could have written */
static void h_memo_far(pk *p)
{
    PK(p, "\x80\x02N" "r\xff\xff\xff\x7f.");
}

static void h_memo_unset(pk *p)
{
    PK(p, "\x80\x02h\x05.");
}

static void h_marks(pk *p)
{
    PK(p, "\x80\x02");
    for (int i = 0; i < 5000; i++)
        PK(p, "(");
    PK(p, ".");
}

/* a 4 GiB string in a 20-byte file */
static void h_huge_string(pk *p)
{
    PK(p, "\x80\x02X\xff\xff\xff\xff" "abc.");
}

static void h_huge_bytes8(pk *p)
{
    PK(p, "\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\x7f" "abc.");
}

static void h_negative_long4(pk *p)
{
    PK(p, "\x80\x02\x8b\xff\xff\xff\xff.");
}

static void h_frame_past_end(pk *p)
{
    PK(p, "\x80\x04\x95\x00\x01\x00\x00\x00\x00\x00\x00N.");
}

static void h_frame_straddle(pk *p)
{
    PK(p, "\x80\x04\x95\x03\x00\x00\x00\x00\x00\x00\x00\x8c\x05" "abcde.");
}

static void h_setitems_list(pk *p)
{
    PK(p, "\x80\x02](K\x01K\x02u.");
}

static void h_build_int(pk *p)
{
    PK(p, "\x80\x02K\x01}b.");
}

static void h_stack_underflow(pk *p)
{
    PK(p, "\x80\x02(\x85.");
}

static void h_leftover(pk *p)
{
    PK(p, "\x80\x02K\x01K\x02.");
}

static void h_no_stop(pk *p)
{
    PK(p, "\x80\x02}");
}

static void h_protocol(pk *p)
{
    PK(p, "\x80\x06N.");
}

static void h_unknown_op(pk *p)
{
    PK(p, "\x80\x02\xff.");
}

static void h_bad_utf8(pk *p)
{
    PK(p, "\x80\x02X\x02\x00\x00\x00\xc3\x28.");
}

static const struct hostile {
    const char *name;
    pk_fn build;
    dfx_status status;
    const char *expect;
} hostile_cases[] = {
    {"os_system", h_os_system, DFX_ERR_FORMAT, "refuses to unpickle global 'os.system' (only "
     "tensor data and plain containers are read)"},
    {"builtins_eval", h_builtins_eval, DFX_ERR_FORMAT, "global 'builtins.eval'"},
    {"py2_builtin_eval", h_py2_builtin_eval, DFX_ERR_FORMAT, "global '__builtin__.eval'"},
    {"builtins_exec", h_builtins_exec, DFX_ERR_FORMAT, "global 'builtins.exec'"},
    {"posix_system", h_posix_system, DFX_ERR_FORMAT, "global 'posix.system'"},
    {"nt_system", h_nt_system, DFX_ERR_FORMAT, "global 'nt.system'"},
    {"subprocess", h_subprocess, DFX_ERR_FORMAT, "global 'subprocess.Popen'"},
    {"getattr", h_getattr, DFX_ERR_FORMAT, "global 'builtins.getattr'"},
    {"load_from_bytes", h_load_from_bytes, DFX_ERR_FORMAT,
     "global 'torch.storage._load_from_bytes'"},
    {"copyreg", h_copyreg, DFX_ERR_FORMAT, "global 'copyreg._reconstructor'"},
    {"stack_global", h_stack_global, DFX_ERR_FORMAT, "refuses to unpickle global 'os.system'"},
    {"stack_global_eval", h_stack_global_eval, DFX_ERR_FORMAT, "global 'builtins.eval'"},
    {"memo_names", h_memo_names, DFX_ERR_FORMAT, "global 'os.system'"},
    {"in_tensor", h_in_tensor, DFX_ERR_FORMAT, "global 'os.system'"},
    {"in_persid", h_in_persid, DFX_ERR_FORMAT, "global 'os.system'"},
    {"inst", h_inst, DFX_ERR_FORMAT, "global 'os.system'"},
    {"newline_name", h_newline_name, DFX_ERR_FORMAT,
     "global 'torch._utils\\n._rebuild_tensor_v2'"},
    {"unicode_module", h_unicode_module, DFX_ERR_FORMAT, "global '\xd0\xbes.system'"},
    {"long_name", h_long_name, DFX_ERR_FORMAT, "...' (a name of 100007 bytes;"},
    {"ext1", h_ext1, DFX_ERR_FORMAT, "refuses extension codes"},
    {"call_dict", h_call_dict, DFX_ERR_FORMAT, "(REDUCE): calls a dict, not an allowed global"},
    {"call_result", h_call_result, DFX_ERR_FORMAT, "calls an object, not an allowed global"},
    {"memo_far", h_memo_far, DFX_ERR_FORMAT, "memo index 2147483647 is larger than"},
    {"memo_unset", h_memo_unset, DFX_ERR_FORMAT, "memo entry 5 is read before it is written"},
    {"marks", h_marks, DFX_ERR_FORMAT, "more than 4096 MARKs"},
    {"huge_string", h_huge_string, DFX_ERR_FORMAT, "ends in the middle of an opcode"},
    {"huge_bytes8", h_huge_bytes8, DFX_ERR_FORMAT, "ends in the middle of an opcode"},
    {"negative_long4", h_negative_long4, DFX_ERR_FORMAT, "(LONG4): a negative byte count"},
    {"frame_past_end", h_frame_past_end, DFX_ERR_FORMAT, "a frame of 256 bytes"},
    {"frame_straddle", h_frame_straddle, DFX_ERR_FORMAT, "runs past the end of its frame"},
    {"setitems_list", h_setitems_list, DFX_ERR_FORMAT, "adds items to a list, expected a dict"},
    {"build_int", h_build_int, DFX_ERR_FORMAT, "sets the state of an int"},
    {"stack_underflow", h_stack_underflow, DFX_ERR_FORMAT, "fewer than 1 items"},
    {"leftover", h_leftover, DFX_ERR_FORMAT, "the stack holds 2 items"},
    {"no_stop", h_no_stop, DFX_ERR_FORMAT, "ends without its STOP opcode"},
    {"protocol", h_protocol, DFX_ERR_UNSUPPORTED, "pickle protocol 6"},
    {"unknown_op", h_unknown_op, DFX_ERR_FORMAT, "unknown opcode 0xff"},
    {"bad_utf8", h_bad_utf8, DFX_ERR_FORMAT, "not valid UTF-8"},
};

/* Every case, as a raw pickle file (what dfx_weights_open takes for the
 * legacy format) and straight through the unpickler; the os.system and
 * subprocess payloads would create `pwned`, which must not exist after. */
START_TEST(test_hostile_pickles)
{
    for (size_t i = 0; i < sizeof hostile_cases / sizeof *hostile_cases; i++) {
        const struct hostile *h = &hostile_cases[i];
        pk p = {0};
        h->build(&p);
        char path[256], name[64];
        snprintf(name, sizeof name, "%s.pt", h->name);
        write_bytes(in_tmp(path, sizeof path, name), p.b, p.n);
        expect_open_error(path, h->status, h->expect);

        dfx__pickle *pkl = (dfx__pickle *)&pkl;
        dfx_status st = dfx__pickle_load("h.pkl", p.b, p.n, NULL, &pkl);
        ck_assert_msg(st == h->status, "%s: %d (%s)", h->name, st, dfx_error_message());
        ck_assert_ptr_null(pkl);
        ck_assert_msg(strstr(dfx_error_message(), h->expect), "%s: %s", h->name,
                      dfx_error_message());
        free(p.b);
        ck_assert_msg(access(pwned, F_OK) != 0, "%s: the payload ran", h->name);
    }
}
END_TEST

/* The control: Python's own unpickler does run the os.system payload, so
 * its file's absence above means dfx did not. Skipped without python3. */
START_TEST(test_hostile_payload_works)
{
    if (access("/usr/bin/python3", X_OK) != 0) {
        fprintf(stderr, "test_hostile_payload_works: no /usr/bin/python3, control skipped\n");
        return;
    }
    pk p = {0};
    h_os_system(&p);
    char path[256];
    write_bytes(in_tmp(path, sizeof path, "payload.pkl"), p.b, p.n);
    free(p.b);
    char *argv[] = {"/usr/bin/python3", "-c",
                    "import pickle, sys; pickle.load(open(sys.argv[1], 'rb'))", path, NULL};
    test_run(argv, NULL, NULL);
    ck_assert_msg(access(pwned, F_OK) == 0, "the payload did not create %s under Python",
                  pwned);
}
END_TEST

/* The generated zip archive whose data.pkl runs "touch dfx_pwned", read from
 * the folder where it would create that file; and through `dfx inspect`. */
START_TEST(test_hostile_archive)
{
    ck_assert_int_eq(chdir(tmpdir), 0);
    const char *path = data_file("hostile_os_system.ckpt");
    expect_open_error(path, DFX_ERR_FORMAT, "refuses to unpickle global 'os.system'");
    char *argv[] = {(char *)dfx_exe, "inspect", (char *)path, NULL};
    char *out, *err;
    ck_assert_int_eq(test_run(argv, &out, &err), 1);
    ck_assert_msg(strstr(err, "refuses to unpickle global 'os.system' (only tensor data and "
                         "plain containers are read)"), "%s", err);
    free(out);
    free(err);
    ck_assert_msg(access("dfx_pwned", F_OK) != 0, "the payload ran");
}
END_TEST

/* A list that contains itself: a graph, built without looping. */
START_TEST(test_cycle)
{
    static const unsigned char cyc[] = "\x80\x02}(X\x01\x00\x00\x00x]q\x00h\x00" "au.";
    dfx__pickle *p;
    ck_assert_int_eq(dfx__pickle_load("c", cyc, sizeof cyc - 1, NULL, &p), DFX_OK);
    const dfx__pk *root = dfx__pickle_root(p);
    ck_assert_int_eq(root->type, DFX__PK_DICT);
    const dfx__pk *list = root->items[1];
    ck_assert(list->type == DFX__PK_LIST && list->n == 1 && list->items[0] == list);
    dfx__pickle_free(p);
}
END_TEST

/* ---- the unpickler's values --------------------------------------------- */

/* Protocol 0 text opcodes, checked against what Python's pickle.loads gives:
 * {'kéy': [1, 2.5, "aA\n'A", True, -123456789012345678901234567890, -5, 'kéy']} */
START_TEST(test_protocol0)
{
    static const char src[] = "(dp0\nVk\\u00e9y\np1\n(lp2\nI1\naF2.5\naS'a\\x41\\n\\'\\101'\n"
                              "p3\naI01\naL-123456789012345678901234567890L\naI-5\nag1\nas.";
    dfx__pickle *p;
    ck_assert_msg(dfx__pickle_load("p0", src, sizeof src - 1, NULL, &p) == DFX_OK, "%s",
                  dfx_error_message());
    const dfx__pk *d = dfx__pickle_root(p);
    ck_assert(d->type == DFX__PK_DICT && d->n == 2);
    ck_assert_str_eq(d->items[0]->s, "k\xc3\xa9y");
    const dfx__pk *l = d->items[1];
    ck_assert(l->type == DFX__PK_LIST && l->n == 7);
    ck_assert(l->items[0]->type == DFX__PK_INT && l->items[0]->i == 1);
    ck_assert(l->items[1]->type == DFX__PK_FLOAT && l->items[1]->f == 2.5);
    ck_assert(l->items[2]->type == DFX__PK_STR && l->items[2]->len == 5);
    ck_assert_str_eq(l->items[2]->s, "aA\n'A");
    ck_assert(l->items[3]->type == DFX__PK_BOOL && l->items[3]->i == 1);
    static const unsigned char big[] = {0x2e, 0xf5, 0xc0, 0xb1, 0x11, 0x1f, 0x8c,
                                        0x3c, 0x09, 0xf0, 0x16, 0x71, 0xfe};
    ck_assert(l->items[4]->type == DFX__PK_BIGINT && l->items[4]->len == sizeof big);
    ck_assert(memcmp(l->items[4]->s, big, sizeof big) == 0);
    ck_assert(l->items[5]->type == DFX__PK_INT && l->items[5]->i == -5);
    ck_assert_ptr_eq(l->items[6], d->items[0]);
    dfx__pickle_free(p);
}
END_TEST

/* Binary ints at their edges: BININT's sign, LONG1 that fits int64 in 8 and
 * 9 bytes, and the legacy magic number, which does not. */
START_TEST(test_binary_ints)
{
    static const unsigned char src[] =
        "\x80\x02(J\xff\xff\xff\xff\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80"
        "\x8a\x09\xff\xff\xff\xff\xff\xff\xff\x7f\x00\x8a\x00"
        "\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19t.";
    dfx__pickle *p;
    ck_assert_msg(dfx__pickle_load("ints", src, sizeof src - 1, NULL, &p) == DFX_OK, "%s",
                  dfx_error_message());
    const dfx__pk *t = dfx__pickle_root(p);
    ck_assert(t->type == DFX__PK_TUPLE && t->n == 5);
    ck_assert(t->items[0]->type == DFX__PK_INT && t->items[0]->i == -1);
    ck_assert(t->items[1]->type == DFX__PK_INT && t->items[1]->i == INT64_MIN);
    ck_assert(t->items[2]->type == DFX__PK_INT && t->items[2]->i == INT64_MAX);
    ck_assert(t->items[3]->type == DFX__PK_INT && t->items[3]->i == 0);
    ck_assert(t->items[4]->type == DFX__PK_BIGINT && t->items[4]->len == 10);
    dfx__pickle_free(p);

    size_t used;
    ck_assert_int_eq(dfx__pickle_load("two", "N.N.", 4, &used, &p), DFX_OK);
    ck_assert_uint_eq(used, 2);
    dfx__pickle_free(p);
    ck_assert_int_eq(dfx__pickle_load("two", "N.N.", 4, NULL, &p), DFX_ERR_FORMAT);
    ck_assert_msg(strstr(dfx_error_message(), "2 bytes after the pickle's STOP"), "%s",
                  dfx_error_message());
}
END_TEST

/* ---- the command line ----------------------------------------------------- */

START_TEST(test_inspect)
{
    char *argv[] = {(char *)dfx_exe, "inspect", (char *)data_file("nested_legacy.ckpt"), NULL};
    char *out, *err;
    ck_assert_msg(test_run(argv, &out, &err) == 0, "%s", err);
    ck_assert_msg(strstr(out, "14 tensors (torch legacy checkpoint)"), "%s", out);
    ck_assert_msg(strstr(out, "transposed") && strstr(out, "[4,3]"), "%s", out);
    ck_assert_msg(strstr(out, "BF16     [16]"), "%s", out);
    free(out);
    free(err);
}
END_TEST

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/dfx_torch_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    snprintf(pwned, sizeof pwned, "%s/pwned", tmpdir);
}

static void teardown(void)
{
    nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DFX_EXECUTABLE\n", argv[0]);
        return 2;
    }
    /* test_hostile_archive runs it from a temporary folder */
    static char exe[4096];
    if (!realpath(argv[1], exe)) {
        fprintf(stderr, "%s: cannot find %s\n", argv[0], argv[1]);
        return 2;
    }
    dfx_exe = exe;
    Suite *s = suite_create("torch");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_nested_zip);
    tcase_add_test(tc, test_nested_legacy);
    tcase_add_test(tc, test_zip64);
    tcase_add_test(tc, test_plain);
    tcase_add_test(tc, test_detect_by_content);
    tcase_add_test(tc, test_damaged);
    tcase_add_test(tc, test_hostile_pickles);
    tcase_add_test(tc, test_hostile_payload_works);
    tcase_add_test(tc, test_hostile_archive);
    tcase_add_test(tc, test_cycle);
    tcase_add_test(tc, test_protocol0);
    tcase_add_test(tc, test_binary_ints);
    tcase_add_test(tc, test_inspect);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
