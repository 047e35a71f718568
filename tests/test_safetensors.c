/* safetensors: writer/reader round trips for every dtype, views and
 * conversions, hostile headers built byte by byte (each with its own
 * message), sharded sets, and every file in the shared fixtures. */
#include <ftw.h>
#include <stdint.h>
#include <sys/stat.h>

#include "testutil.h"

static char tmpdir[64];

/* dir/name in a caller buffer */
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

/* An image whose length field says `claimed`, then header, then data_len
 * bytes of data (0, 1, 2, ...). */
static void write_image_len(const char *path, uint64_t claimed, const char *header,
                            size_t data_len)
{
    size_t hn = strlen(header);
    unsigned char *img = malloc(8 + hn + data_len + 1);
    ck_assert_ptr_nonnull(img);
    for (int i = 0; i < 8; i++)
        img[i] = (unsigned char)(claimed >> (8 * i));
    memcpy(img + 8, header, hn);
    for (size_t i = 0; i < data_len; i++)
        img[8 + hn + i] = (unsigned char)i;
    write_bytes(path, img, 8 + hn + data_len);
    free(img);
}

static void write_image(const char *path, const char *header, size_t data_len)
{
    write_image_len(path, strlen(header), header, data_len);
}

/* Opening path must fail with `want` and a message holding each substring. */
static void expect_open_error_v(const char *path, dfx_status want, const char *const *subs)
{
    dfx_safetensors *st = (dfx_safetensors *)&st;
    dfx_status got = dfx_safetensors_open(path, &st);
    const char *msg = dfx_error_message();
    ck_assert_msg(got == want, "%s: status %d, want %d (%s)", path, got, want, msg);
    ck_assert_ptr_null(st);
    for (; *subs; subs++)
        ck_assert_msg(strstr(msg, *subs), "message \"%s\" lacks \"%s\"", msg, *subs);
}

#define EXPECT_OPEN_ERROR(path, want, ...)                                     \
    do {                                                                       \
        const char *subs_[] = {__VA_ARGS__, NULL};                             \
        expect_open_error_v((path), (want), subs_);                            \
    } while (0)

static dfx_safetensors *open_ok(const char *path)
{
    dfx_safetensors *st = NULL;
    dfx_status s = dfx_safetensors_open(path, &st);
    ck_assert_msg(s == DFX_OK, "%s: %s", path, dfx_error_message());
    ck_assert_ptr_nonnull(st);
    return st;
}

static uint64_t read_u64le(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    ck_assert_ptr_nonnull(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(fread(buf, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return buf;
}

START_TEST(test_round_trip_all_dtypes)
{
    char path[128];
    in_tmp(path, sizeof path, "all.safetensors");
    enum { N = DFX_DTYPE__COUNT + 3 };
    dfx_tensor *ts[N];
    char names[N][32];
    const char *name_ptrs[N];
    const int64_t shape[2] = {2, 3};

    for (int d = 0; d < DFX_DTYPE__COUNT; d++) {
        ck_assert_int_eq(dfx_tensor_create(&ts[d], (dfx_dtype)d, 2, shape), DFX_OK);
        unsigned char *p = ts[d]->data;
        for (size_t i = 0; i < dfx_tensor_nbytes(ts[d]); i++)
            p[i] = (unsigned char)(i * 7 + (size_t)d);
        snprintf(names[d], sizeof names[d], "t_%s", dfx_dtype_name((dfx_dtype)d));
    }
    /* a scalar, an empty tensor and a name that needs escaping */
    ck_assert_int_eq(dfx_tensor_create(&ts[N - 3], DFX_DTYPE_F32, 0, NULL), DFX_OK);
    *(float *)ts[N - 3]->data = 3.25f;
    snprintf(names[N - 3], sizeof names[N - 3], "scalar");
    const int64_t empty_shape[2] = {0, 4};
    ck_assert_int_eq(dfx_tensor_create(&ts[N - 2], DFX_DTYPE_F64, 2, empty_shape), DFX_OK);
    snprintf(names[N - 2], sizeof names[N - 2], "empty");
    const int64_t one = 1;
    ck_assert_int_eq(dfx_tensor_create(&ts[N - 1], DFX_DTYPE_I16, 1, &one), DFX_OK);
    *(int16_t *)ts[N - 1]->data = -5;
    snprintf(names[N - 1], sizeof names[N - 1], "we\"ird\\ na\nme \xc3\xa9");
    for (int i = 0; i < N; i++)
        name_ptrs[i] = names[i];

    const char *mk[] = {"format", "k\xc3\xa9y \"q\" \\", "ctl"};
    const char *mv[] = {"pt", "v\nw", "\x01\x1f\t"};
    ck_assert_int_eq(dfx_safetensors_write(path, N, name_ptrs, (const dfx_tensor *const *)ts,
                                           3, mk, mv), DFX_OK);

    /* the layout: header padded with spaces to a multiple of 8, metadata first */
    size_t flen;
    unsigned char *raw = slurp(path, &flen);
    uint64_t hn = read_u64le(raw);
    ck_assert_uint_eq(hn % 8, 0);
    ck_assert_int_eq(memcmp(raw + 8, "{\"__metadata__\":{\"format\":\"pt\"", 30), 0);
    size_t end = (size_t)hn;
    while (end > 0 && raw[8 + end - 1] == ' ')
        end--;
    ck_assert_int_eq(raw[8 + end - 1], '}');
    ck_assert_uint_lt(hn - end, 8);
    free(raw);

    dfx_safetensors *st = open_ok(path);
    ck_assert_str_eq(dfx_safetensors_path(st), path);
    ck_assert_int_eq(dfx_safetensors_count(st), N);
    for (int i = 0; i < N; i++) {
        /* written back to back in the given order, so offset order is it */
        ck_assert_str_eq(dfx_safetensors_name(st, i), names[i]);
        ck_assert(dfx_safetensors_has(st, names[i]));
        dfx_tensor v;
        ck_assert_int_eq(dfx_safetensors_view(st, names[i], &v), DFX_OK);
        ck_assert_int_eq(v.dtype, ts[i]->dtype);
        ck_assert_int_eq(v.ndim, ts[i]->ndim);
        ck_assert(dfx_tensor_same_shape(&v, ts[i]));
        ck_assert(!v.owns_data);
        ck_assert_int_eq(memcmp(v.data, ts[i]->data, dfx_tensor_nbytes(ts[i])), 0);

        /* reading into the same dtype copies every dtype, F8 included */
        dfx_tensor *r = NULL;
        ck_assert_int_eq(dfx_safetensors_read(st, names[i], ts[i]->dtype, &r), DFX_OK);
        ck_assert(r->owns_data);
        ck_assert(r->data != v.data);
        ck_assert_int_eq(memcmp(r->data, ts[i]->data, dfx_tensor_nbytes(ts[i])), 0);
        dfx_tensor_destroy(r);
    }
    ck_assert(!dfx_safetensors_has(st, "t_"));
    ck_assert_ptr_null(dfx_safetensors_name(st, N));
    ck_assert_ptr_null(dfx_safetensors_name(st, -1));

    ck_assert_int_eq(dfx_safetensors_metadata_count(st), 3);
    for (int i = 0; i < 3; i++) {
        ck_assert_str_eq(dfx_safetensors_metadata_key(st, i), mk[i]);
        ck_assert_str_eq(dfx_safetensors_metadata(st, mk[i]), mv[i]);
    }
    ck_assert_ptr_null(dfx_safetensors_metadata(st, "missing"));
    ck_assert_ptr_null(dfx_safetensors_metadata_key(st, 3));
    dfx_safetensors_close(st);

    for (int i = 0; i < N; i++)
        dfx_tensor_destroy(ts[i]);
}
END_TEST

START_TEST(test_view_and_read)
{
    char path[128];
    in_tmp(path, sizeof path, "vr.safetensors");
    const int64_t shape[2] = {2, 2};
    dfx_tensor *f32, *f16, *bf16, *i64;
    ck_assert_int_eq(dfx_tensor_create(&f32, DFX_DTYPE_F32, 2, shape), DFX_OK);
    ck_assert_int_eq(dfx_tensor_create(&f16, DFX_DTYPE_F16, 2, shape), DFX_OK);
    ck_assert_int_eq(dfx_tensor_create(&bf16, DFX_DTYPE_BF16, 2, shape), DFX_OK);
    ck_assert_int_eq(dfx_tensor_create(&i64, DFX_DTYPE_I64, 2, shape), DFX_OK);
    const float vals[4] = {1.0f, -2.5f, 0.099975586f, 65504.0f};
    const float bvals[4] = {1.0f, -2.5f, 0.099609375f, 3.3895314e38f};
    /* IEEE half and bfloat16 encodings of vals / bvals */
    const uint16_t h[4] = {0x3c00, 0xc100, 0x2e66, 0x7bff};
    const uint16_t b[4] = {0x3f80, 0xc020, 0x3dcc, 0x7f7f};
    const int64_t iv[4] = {0, -7, 999, (int64_t)1 << 40};
    memcpy(f32->data, vals, sizeof vals);
    memcpy(f16->data, h, sizeof h);
    memcpy(bf16->data, b, sizeof b);
    memcpy(i64->data, iv, sizeof iv);
    const char *names[] = {"f32", "f16", "bf16", "i64"};
    const dfx_tensor *ts[] = {f32, f16, bf16, i64};
    ck_assert_int_eq(dfx_safetensors_write(path, 4, names, ts, 0, NULL, NULL), DFX_OK);

    dfx_safetensors *st = open_ok(path);
    ck_assert_int_eq(dfx_safetensors_metadata_count(st), 0);
    dfx_tensor v;
    ck_assert_int_eq(dfx_safetensors_view(st, "f32", &v), DFX_OK);
    ck_assert_int_eq(memcmp(v.data, vals, sizeof vals), 0);

    dfx_tensor *r = NULL;
    ck_assert_int_eq(dfx_safetensors_read(st, "f32", DFX_DTYPE_F32, &r), DFX_OK);
    ck_assert_ptr_ne(r->data, v.data);
    ck_assert_int_eq(memcmp(r->data, vals, sizeof vals), 0);
    dfx_tensor_destroy(r);

    ck_assert_int_eq(dfx_safetensors_read(st, "f16", DFX_DTYPE_F32, &r), DFX_OK);
    ck_assert_int_eq(r->dtype, DFX_DTYPE_F32);
    ck_assert(dfx_tensor_same_shape(r, f16));
    for (int i = 0; i < 4; i++)
        ck_assert_float_eq(((float *)r->data)[i], vals[i]);
    dfx_tensor_destroy(r);

    ck_assert_int_eq(dfx_safetensors_read(st, "bf16", DFX_DTYPE_F32, &r), DFX_OK);
    for (int i = 0; i < 4; i++)
        ck_assert_float_eq(((float *)r->data)[i], bvals[i]);
    dfx_tensor_destroy(r);

    ck_assert_int_eq(dfx_safetensors_read(st, "i64", DFX_DTYPE_F64, &r), DFX_OK);
    for (int i = 0; i < 4; i++)
        ck_assert_double_eq(((double *)r->data)[i], (double)iv[i]);
    dfx_tensor_destroy(r);

    ck_assert_int_eq(dfx_safetensors_read(st, "f32", DFX_DTYPE_F16, &r), DFX_OK);
    ck_assert_int_eq(memcmp(r->data, h, sizeof h), 0);
    dfx_tensor_destroy(r);

    /* misuse */
    r = (dfx_tensor *)&r;
    ck_assert_int_eq(dfx_safetensors_read(st, "nope", DFX_DTYPE_F32, &r), DFX_ERR_NOT_FOUND);
    ck_assert_ptr_null(r);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "vr.safetensors: no tensor named 'nope'"));
    ck_assert_int_eq(dfx_safetensors_view(st, "nope", &v), DFX_ERR_NOT_FOUND);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "vr.safetensors: no tensor named 'nope'"));
    ck_assert_int_eq(dfx_safetensors_read(st, "f32", (dfx_dtype)99, &r), DFX_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "tensor 'f32': invalid target dtype 99"));
    ck_assert_int_eq(dfx_safetensors_read(st, "f32", DFX_DTYPE_F8_E4M3, &r), DFX_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "vr.safetensors: tensor 'f32': "));
    ck_assert_ptr_null(r);
    dfx_safetensors_close(st);
    dfx_safetensors_close(NULL);

    dfx_tensor_destroy(f32);
    dfx_tensor_destroy(f16);
    dfx_tensor_destroy(bf16);
    dfx_tensor_destroy(i64);
}
END_TEST

START_TEST(test_unaligned)
{
    /* other writers need not pad: here the data region starts at an odd
     * offset, so the view is misaligned for F32 and read must cope */
    char path[128];
    in_tmp(path, sizeof path, "odd.safetensors");
    const char *header = "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}";
    ck_assert_uint_eq(strlen(header) % 2, 1);
    size_t hn = strlen(header);
    unsigned char img[256];
    for (int i = 0; i < 8; i++)
        img[i] = (unsigned char)((uint64_t)hn >> (8 * i));
    memcpy(img + 8, header, hn);
    const float vals[3] = {1.5f, -0.25f, 1e30f};
    memcpy(img + 8 + hn, vals, sizeof vals);
    write_bytes(path, img, 8 + hn + sizeof vals);

    dfx_safetensors *st = open_ok(path);
    dfx_tensor v;
    ck_assert_int_eq(dfx_safetensors_view(st, "a", &v), DFX_OK);
    ck_assert_uint_ne((uintptr_t)v.data % 4, 0);
    dfx_tensor *r;
    ck_assert_int_eq(dfx_safetensors_read(st, "a", DFX_DTYPE_F64, &r), DFX_OK);
    for (int i = 0; i < 3; i++)
        ck_assert_double_eq(((double *)r->data)[i], (double)vals[i]);
    dfx_tensor_destroy(r);
    ck_assert_int_eq(dfx_safetensors_read(st, "a", DFX_DTYPE_F32, &r), DFX_OK);
    ck_assert_int_eq(memcmp(r->data, vals, sizeof vals), 0);
    ck_assert_uint_eq((uintptr_t)r->data % 64, 0);
    dfx_tensor_destroy(r);
    dfx_safetensors_close(st);
}
END_TEST

START_TEST(test_empty_sets)
{
    char path[128];
    in_tmp(path, sizeof path, "empty.safetensors");
    ck_assert_int_eq(dfx_safetensors_write(path, 0, NULL, NULL, 0, NULL, NULL), DFX_OK);
    size_t n;
    unsigned char *raw = slurp(path, &n);
    ck_assert_uint_eq(n, 16);
    ck_assert_int_eq(memcmp(raw + 8, "{}      ", 8), 0);
    free(raw);
    dfx_safetensors *st = open_ok(path);
    ck_assert_int_eq(dfx_safetensors_count(st), 0);
    ck_assert(!dfx_safetensors_has(st, "a"));
    dfx_safetensors_close(st);

    write_image(path, "{}", 0);
    st = open_ok(path);
    ck_assert_int_eq(dfx_safetensors_count(st), 0);
    dfx_safetensors_close(st);

    write_image(path, "{\"__metadata__\":{\"format\":\"pt\"}}", 0);
    st = open_ok(path);
    ck_assert_int_eq(dfx_safetensors_count(st), 0);
    ck_assert_str_eq(dfx_safetensors_metadata(st, "format"), "pt");
    dfx_safetensors_close(st);

    /* zero-size tensors take no bytes, wherever the zero is */
    write_image(path, "{\"z\":{\"dtype\":\"F32\",\"shape\":[0,4611686018427387904,4],"
                      "\"data_offsets\":[0,0]},"
                      "\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                      "\"e\":{\"dtype\":\"F16\",\"shape\":[0],\"data_offsets\":[2,2]}}", 2);
    st = open_ok(path);
    ck_assert_int_eq(dfx_safetensors_count(st), 3);
    ck_assert_str_eq(dfx_safetensors_name(st, 0), "z");
    ck_assert_str_eq(dfx_safetensors_name(st, 1), "a");
    ck_assert_str_eq(dfx_safetensors_name(st, 2), "e");
    dfx_tensor *r;
    ck_assert_int_eq(dfx_safetensors_read(st, "e", DFX_DTYPE_F32, &r), DFX_OK);
    ck_assert_int_eq(dfx_tensor_numel(r), 0);
    dfx_tensor_destroy(r);
    dfx_safetensors_close(st);
}
END_TEST

typedef struct hostile {
    const char *header;
    size_t data_len;
    dfx_status status;
    const char *message;
} hostile;

#define T1(dtype, shape, offs) \
    "{\"a\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":" offs "}}"

static const hostile hostile_headers[] = {
    {T1("F32", "[100]", "[0,400]"), 256, DFX_ERR_FORMAT,
     "bad.safetensors: tensor 'a': data_offsets [0, 400] past the end of the data (256 bytes"},
    {T1("F32", "[2]", "[0,1000000000000]"), 8, DFX_ERR_FORMAT,
     "tensor 'a': data_offsets [0, 1000000000000] past the end of the data (8 bytes"},
    {T1("F32", "[2]", "[8,0]"), 8, DFX_ERR_FORMAT,
     "bad.safetensors: tensor 'a': data_offsets [8, 0] end before they begin"},
    {T1("F32", "[2,3]", "[0,20]"), 20, DFX_ERR_FORMAT,
     "bad.safetensors: tensor 'a': shape [2,3] of F32 is 24 bytes but data_offsets [0, 20] span 20"},
    {T1("F32", "[1099511627776,1099511627776]", "[0,0]"), 0, DFX_ERR_FORMAT,
     "bad.safetensors: tensor 'a': shape [1099511627776,1099511627776] has too many elements"},
    {T1("F32", "[4611686018427387904]", "[0,0]"), 0, DFX_ERR_FORMAT,
     "tensor 'a': shape [4611686018427387904] has too many elements"},
    {T1("F32", "[4611686018427387904,4611686018427387904,0]", "[0,0]"), 0, DFX_ERR_FORMAT,
     "has too many elements"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, DFX_ERR_FORMAT,
     "bad.safetensors: tensors 'a' [0, 8] and 'b' [4, 12] overlap"},
    {"{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
     "\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}", 12, DFX_ERR_FORMAT,
     "tensors 'a' [0, 12] and 'b' [4, 8] overlap"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", 20, DFX_ERR_FORMAT,
     "bad.safetensors: data bytes [8, 12) belong to no tensor (a gap before tensor 'b')"},
    {T1("F32", "[2]", "[4,12]"), 12, DFX_ERR_FORMAT,
     "data bytes [0, 4) belong to no tensor (a gap before tensor 'a')"},
    {T1("F32", "[2]", "[0,8]"), 12, DFX_ERR_FORMAT,
     "bad.safetensors: the last 4 bytes of the data (from offset 8) belong to no tensor"},
    {"{}", 4, DFX_ERR_FORMAT, "the last 4 bytes of the data (from offset 0) belong to no tensor"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16, DFX_ERR_FORMAT,
     "bad.safetensors: tensor 'a' appears more than once in the header"},
    {T1("F4", "[2]", "[0,1]"), 1, DFX_ERR_FORMAT,
     "bad.safetensors: tensor 'a': unknown dtype 'F4' (known: F32, F16, BF16, F64, I64, I32, "
     "I16, I8, U8, U16, U32, U64, BOOL, F8_E4M3, F8_E5M2)"},
    {T1("f32", "[2]", "[0,8]"), 8, DFX_ERR_FORMAT, "tensor 'a': unknown dtype 'f32'"},
    {"{\"a\":{\"dtype\":\"F32\\u0000\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, DFX_ERR_FORMAT,
     "tensor 'a': dtype 'F32\\u0000...' contains a NUL character"},
    {T1("F32", "[-2]", "[0,0]"), 0, DFX_ERR_FORMAT,
     "bad.safetensors: tensor 'a': shape[0] is -2, expected a non-negative 64-bit integer"},
    {T1("F32", "[2,2.5]", "[0,20]"), 20, DFX_ERR_FORMAT,
     "tensor 'a': shape[1] is 2.5, expected a non-negative 64-bit integer"},
    {T1("F32", "[2.0]", "[0,8]"), 8, DFX_ERR_FORMAT, "tensor 'a': shape[0] is 2.0, expected"},
    {T1("F32", "[1e3]", "[0,8]"), 8, DFX_ERR_FORMAT, "tensor 'a': shape[0] is 1e+03, expected"},
    {T1("F32", "[\"2\"]", "[0,8]"), 8, DFX_ERR_FORMAT,
     "tensor 'a': shape[0] is a string, expected a non-negative 64-bit integer"},
    {T1("F32", "[null]", "[0,8]"), 8, DFX_ERR_FORMAT, "tensor 'a': shape[0] is null, expected"},
    {T1("F32", "[9223372036854775808]", "[0,8]"), 8, DFX_ERR_FORMAT,
     "tensor 'a': shape[0] is 9.223372036854776e+18, expected a non-negative 64-bit integer"},
    {T1("F32", "[-Infinity]", "[0,8]"), 8, DFX_ERR_FORMAT, "tensor 'a': shape[0] is -Infinity"},
    {T1("F32", "[NaN]", "[0,8]"), 8, DFX_ERR_FORMAT, "tensor 'a': shape[0] is NaN"},
    {T1("F32", "[1,1,1,1,1,1,1,1,1]", "[0,4]"), 4, DFX_ERR_UNSUPPORTED,
     "bad.safetensors: tensor 'a': shape has 9 dimensions, dfx supports at most 8"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"offsets\":[0,8]}}", 8,
     DFX_ERR_FORMAT, "bad.safetensors: tensor 'a': unexpected key 'offsets' (an entry has "
     "exactly dtype, shape and data_offsets)"},
    {"{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, DFX_ERR_FORMAT,
     "bad.safetensors: tensor 'a': missing \"shape\""},
    {"{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, DFX_ERR_FORMAT,
     "tensor 'a': missing \"dtype\""},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, DFX_ERR_FORMAT,
     "tensor 'a': missing \"data_offsets\""},
    {"{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
     DFX_ERR_FORMAT, "tensor 'a': key 'dtype' appears more than once"},
    {T1("F32", "[2]", "[0,8]") "   ", 8, DFX_OK, NULL},
    {"{\"a\":{\"dtype\":32,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, DFX_ERR_FORMAT,
     "bad.safetensors: tensor 'a': dtype is a number, expected a string such as \"F32\""},
    {T1("F32", "{}", "[0,8]"), 8, DFX_ERR_FORMAT,
     "tensor 'a': shape is an object, expected an array of non-negative integers"},
    {T1("F32", "2", "[0,8]"), 8, DFX_ERR_FORMAT, "tensor 'a': shape is a number, expected an array"},
    {T1("F32", "[2]", "[0,8,16]"), 16, DFX_ERR_FORMAT,
     "bad.safetensors: tensor 'a': data_offsets is an array of 3 elements, expected [begin, end]"},
    {T1("F32", "[2]", "\"0-8\""), 8, DFX_ERR_FORMAT,
     "tensor 'a': data_offsets is a string, expected [begin, end]"},
    {T1("F32", "[2]", "[-8,0]"), 8, DFX_ERR_FORMAT,
     "tensor 'a': data_offsets[0] is -8, expected a non-negative 64-bit integer"},
    {T1("F32", "[2]", "[0,8.0]"), 8, DFX_ERR_FORMAT, "tensor 'a': data_offsets[1] is 8.0"},
    {"{\"__metadata__\":{\"format\":\"pt\",\"n\":1}}", 0, DFX_ERR_FORMAT,
     "bad.safetensors: \"__metadata__\" entry 'n' is a number, expected a string"},
    {"{\"__metadata__\":{\"nested\":{}}}", 0, DFX_ERR_FORMAT,
     "\"__metadata__\" entry 'nested' is an object, expected a string"},
    {"{\"__metadata__\":\"pt\"}", 0, DFX_ERR_FORMAT,
     "bad.safetensors: \"__metadata__\" is a string, expected an object of strings"},
    {"{\"__metadata__\":{\"format\":\"pt\",\"format\":\"np\"}}", 0, DFX_ERR_FORMAT,
     "\"__metadata__\" entry 'format' appears more than once"},
    {"{\"__metadata__\":{\"a\":\"x\\u0000y\"}}", 0, DFX_ERR_FORMAT,
     "\"__metadata__\" entry 'a' contains a NUL character"},
    {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, DFX_ERR_FORMAT,
     "bad.safetensors: \"__metadata__\" appears more than once"},
    {"[]", 0, DFX_ERR_FORMAT, "bad.safetensors: the header is an array, expected a JSON object"},
    {"\"abc\"", 0, DFX_ERR_FORMAT, "the header is a string, expected a JSON object"},
    {"{\"a\":\"x\"}", 0, DFX_ERR_FORMAT,
     "bad.safetensors: tensor 'a' is a string, expected an object with dtype, shape and data_offsets"},
    {"{\"a\":", 0, DFX_ERR_FORMAT,
     "bad.safetensors header:1:6: expected a value, found end of input"},
    {"{\"a\":{}} x", 0, DFX_ERR_FORMAT,
     "bad.safetensors header:1:10: expected end of input after the top-level value, found 'x'"},
    {"{\"\xff\":{}}", 0, DFX_ERR_FORMAT, "bad.safetensors header:1:3: invalid UTF-8"},
    {"{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, DFX_ERR_FORMAT,
     "bad.safetensors: tensor name 'a\\u0000...' contains a NUL character"},
    {"        ", 0, DFX_ERR_FORMAT, "bad.safetensors header:1:9: expected a value"},
    {"{\"__metadata__\\u0000x\":{}}", 0, DFX_ERR_FORMAT,
     "bad.safetensors: tensor name '__metadata__\\u0000...' contains a NUL character"},
};

START_TEST(test_hostile_headers)
{
    char path[128];
    in_tmp(path, sizeof path, "bad.safetensors");
    for (size_t i = 0; i < sizeof hostile_headers / sizeof hostile_headers[0]; i++) {
        const hostile *h = &hostile_headers[i];
        write_image(path, h->header, h->data_len);
        dfx_safetensors *st = (dfx_safetensors *)&st;
        dfx_error_clear();
        dfx_status got = dfx_safetensors_open(path, &st);
        const char *msg = dfx_error_message();
        ck_assert_msg(got == h->status, "case %zu <%s>: status %d, want %d (%s)", i, h->header,
                      got, h->status, msg);
        if (h->status == DFX_OK) {
            dfx_safetensors_close(st);
            continue;
        }
        ck_assert_ptr_null(st);
        ck_assert_msg(strstr(msg, h->message), "case %zu <%s>: message \"%s\" lacks \"%s\"", i,
                      h->header, msg, h->message);
    }
}
END_TEST

START_TEST(test_hostile_lengths)
{
    char path[128];
    in_tmp(path, sizeof path, "bad.safetensors");

    write_bytes(path, "", 0);
    EXPECT_OPEN_ERROR(path, DFX_ERR_FORMAT,
                      "bad.safetensors: the file is 0 bytes, too short for a safetensors file");
    write_bytes(path, "\x02\0\0\0\0", 5);
    EXPECT_OPEN_ERROR(path, DFX_ERR_FORMAT, "the file is 5 bytes, too short");

    write_image_len(path, 1000, "{\"a\":1}", 13);
    EXPECT_OPEN_ERROR(path, DFX_ERR_FORMAT,
                      "bad.safetensors: the header length 1000 is larger than the rest of the file (20 bytes");
    write_image_len(path, UINT64_MAX, "{}", 0);
    EXPECT_OPEN_ERROR(path, DFX_ERR_FORMAT,
                      "the header length 18446744073709551615 is larger than the rest of the file (2 bytes");
    write_image_len(path, 0, "{}", 0);
    EXPECT_OPEN_ERROR(path, DFX_ERR_FORMAT, "bad.safetensors: the header length is 0");
    /* a length shorter than the JSON cuts it */
    write_image_len(path, 5, T1("F32", "[2]", "[0,8]"), 8);
    EXPECT_OPEN_ERROR(path, DFX_ERR_FORMAT, "bad.safetensors header:1:6: expected");

    /* above the 100 MiB header limit (a sparse file) */
    unsigned char len8[8];
    const uint64_t big = ((uint64_t)100 << 20) + 8;
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)(big >> (8 * i));
    write_bytes(path, len8, 8);
    ck_assert_int_eq(truncate(path, (off_t)(big + 8)), 0);
    EXPECT_OPEN_ERROR(path, DFX_ERR_FORMAT,
                      "bad.safetensors: the header length 104857608 exceeds the 100 MiB limit");

    /* a good file cut short */
    const int64_t shape[1] = {64};
    dfx_tensor *t;
    ck_assert_int_eq(dfx_tensor_create(&t, DFX_DTYPE_F32, 1, shape), DFX_OK);
    const char *names[] = {"w"};
    const dfx_tensor *ts[] = {t};
    ck_assert_int_eq(dfx_safetensors_write(path, 1, names, ts, 0, NULL, NULL), DFX_OK);
    struct stat sb;
    ck_assert_int_eq(stat(path, &sb), 0);
    ck_assert_int_eq(truncate(path, sb.st_size - 4), 0);
    EXPECT_OPEN_ERROR(path, DFX_ERR_FORMAT,
                      "bad.safetensors: tensor 'w': data_offsets [0, 256] past the end of the data (252 bytes");
    dfx_tensor_destroy(t);

    in_tmp(path, sizeof path, "missing.safetensors");
    EXPECT_OPEN_ERROR(path, DFX_ERR_NOT_FOUND, "missing.safetensors: cannot open");
    EXPECT_OPEN_ERROR(tmpdir, DFX_ERR_IO, "not a regular file");
}
END_TEST

START_TEST(test_write_errors)
{
    char path[128];
    in_tmp(path, sizeof path, "w.safetensors");
    const int64_t shape[1] = {2};
    dfx_tensor *t;
    ck_assert_int_eq(dfx_tensor_create(&t, DFX_DTYPE_F32, 1, shape), DFX_OK);
    ((float *)t->data)[0] = 42.0f;
    const char *good_names[] = {"keep"};
    const dfx_tensor *good[] = {t};
    ck_assert_int_eq(dfx_safetensors_write(path, 1, good_names, good, 0, NULL, NULL), DFX_OK);

    const char *dup_names[] = {"a", "b", "a"};
    const dfx_tensor *three[] = {t, t, t};
    ck_assert_int_eq(dfx_safetensors_write(path, 3, dup_names, three, 0, NULL, NULL),
                     DFX_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "w.safetensors: tensor name 'a' is given more than once"));

    const char *reserved[] = {"__metadata__"};
    ck_assert_int_eq(dfx_safetensors_write(path, 1, reserved, good, 0, NULL, NULL), DFX_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "\"__metadata__\" is reserved"));

    const char *bad_utf8[] = {"a\xff"};
    ck_assert_int_eq(dfx_safetensors_write(path, 1, bad_utf8, good, 0, NULL, NULL), DFX_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "tensor 0: the name is not valid UTF-8"));

    dfx_tensor odd = *t;
    odd.owns_data = false;
    const dfx_tensor *oddp[] = {&odd};
    odd.dtype = (dfx_dtype)77;
    ck_assert_int_eq(dfx_safetensors_write(path, 1, good_names, oddp, 0, NULL, NULL), DFX_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "tensor 'keep': unsupported dtype 77"));
    odd.dtype = DFX_DTYPE_F32;
    odd.ndim = 9;
    ck_assert_int_eq(dfx_safetensors_write(path, 1, good_names, oddp, 0, NULL, NULL), DFX_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "tensor 'keep': ndim 9 is outside [0, 8]"));
    odd.ndim = 2;
    odd.shape[0] = 3;
    odd.shape[1] = -1;
    ck_assert_int_eq(dfx_safetensors_write(path, 1, good_names, oddp, 0, NULL, NULL), DFX_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "tensor 'keep': invalid shape [3,-1]"));
    odd.ndim = 1;
    odd.shape[0] = 2;
    odd.data = NULL;
    ck_assert_int_eq(dfx_safetensors_write(path, 1, good_names, oddp, 0, NULL, NULL), DFX_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "tensor 'keep' has no data"));
    const dfx_tensor *nullt[] = {NULL};
    ck_assert_int_eq(dfx_safetensors_write(path, 1, good_names, nullt, 0, NULL, NULL), DFX_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "tensor 'keep' is NULL"));

    const char *mk[] = {"format", "format"};
    const char *mv[] = {"pt", "np"};
    ck_assert_int_eq(dfx_safetensors_write(path, 1, good_names, good, 2, mk, mv), DFX_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "metadata key 'format' is given more than once"));
    ck_assert_int_eq(dfx_safetensors_write(path, -1, NULL, NULL, 0, NULL, NULL), DFX_ERR_INVALID_ARG);
    ck_assert_int_eq(dfx_safetensors_write(path, 1, NULL, NULL, 0, NULL, NULL), DFX_ERR_INVALID_ARG);

    /* every refusal left the earlier file as it was */
    dfx_safetensors *st = open_ok(path);
    ck_assert_int_eq(dfx_safetensors_count(st), 1);
    ck_assert_str_eq(dfx_safetensors_name(st, 0), "keep");
    dfx_tensor *r;
    ck_assert_int_eq(dfx_safetensors_read(st, "keep", DFX_DTYPE_F32, &r), DFX_OK);
    ck_assert_float_eq(((float *)r->data)[0], 42.0f);
    dfx_tensor_destroy(r);
    dfx_safetensors_close(st);

    /* and no temporary file was left beside it */
    char tmp[160], plain[160];
    snprintf(plain, sizeof plain, "%s/plain", tmpdir);
    FILE *pf = fopen(plain, "w");
    ck_assert_ptr_nonnull(pf);
    fclose(pf);
    snprintf(tmp, sizeof tmp, "%s/plain/dir/x.safetensors", tmpdir);
    ck_assert_int_eq(dfx_safetensors_write(tmp, 1, good_names, good, 0, NULL, NULL), DFX_ERR_IO);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "plain/dir/x.safetensors"));
    unlink(plain);
    dfx_tensor_destroy(t);
}
END_TEST

/* Writes one shard holding tensors named in `names` (F32 [2], values i, i+0.5). */
static void write_shard(const char *file, int n, const char *const *names, float base)
{
    char path[160];
    dfx_tensor *ts[8];
    const int64_t shape[1] = {2};
    for (int i = 0; i < n; i++) {
        ck_assert_int_eq(dfx_tensor_create(&ts[i], DFX_DTYPE_F32, 1, shape), DFX_OK);
        ((float *)ts[i]->data)[0] = base + (float)i;
        ((float *)ts[i]->data)[1] = base + (float)i + 0.5f;
    }
    const char *mk[] = {"format"};
    const char *mv[] = {"pt"};
    ck_assert_int_eq(dfx_safetensors_write(in_tmp(path, sizeof path, file), n, names,
                                           (const dfx_tensor *const *)ts, 1, mk, mv), DFX_OK);
    for (int i = 0; i < n; i++)
        dfx_tensor_destroy(ts[i]);
}

static void write_text(const char *file, const char *text)
{
    char path[160];
    write_bytes(in_tmp(path, sizeof path, file), text, strlen(text));
}

#define SHARD1 "model-00001-of-00002.safetensors"
#define SHARD2 "model-00002-of-00002.safetensors"

START_TEST(test_sharded)
{
    const char *n1[] = {"b.weight", "a.weight"};
    const char *n2[] = {"c.bias"};
    write_shard(SHARD1, 2, n1, 10.0f);
    write_shard(SHARD2, 1, n2, 20.0f);
    write_text("model.safetensors.index.json",
               "{\"metadata\": {\"total_size\": 24, \"format\": \"pt\"},\n"
               " \"weight_map\": {\"a.weight\": \"" SHARD1 "\", \"b.weight\": \"" SHARD1 "\",\n"
               "                \"c.bias\": \"" SHARD2 "\"}}");
    char path[160];
    in_tmp(path, sizeof path, "model.safetensors.index.json");
    dfx_safetensors *st = open_ok(path);
    ck_assert_str_eq(dfx_safetensors_path(st), path);
    ck_assert_int_eq(dfx_safetensors_count(st), 3);
    /* file by file, by offset within a file */
    ck_assert_str_eq(dfx_safetensors_name(st, 0), "b.weight");
    ck_assert_str_eq(dfx_safetensors_name(st, 1), "a.weight");
    ck_assert_str_eq(dfx_safetensors_name(st, 2), "c.bias");
    ck_assert(dfx_safetensors_has(st, "c.bias"));
    ck_assert(!dfx_safetensors_has(st, "c"));
    /* the index's string metadata only */
    ck_assert_int_eq(dfx_safetensors_metadata_count(st), 1);
    ck_assert_str_eq(dfx_safetensors_metadata(st, "format"), "pt");
    ck_assert_ptr_null(dfx_safetensors_metadata(st, "total_size"));

    dfx_tensor *r;
    ck_assert_int_eq(dfx_safetensors_read(st, "a.weight", DFX_DTYPE_F32, &r), DFX_OK);
    ck_assert_float_eq(((float *)r->data)[0], 11.0f);
    ck_assert_float_eq(((float *)r->data)[1], 11.5f);
    dfx_tensor_destroy(r);
    ck_assert_int_eq(dfx_safetensors_read(st, "c.bias", DFX_DTYPE_F64, &r), DFX_OK);
    ck_assert_double_eq(((double *)r->data)[0], 20.0);
    ck_assert_double_eq(((double *)r->data)[1], 20.5);
    dfx_tensor_destroy(r);
    dfx_tensor v;
    ck_assert_int_eq(dfx_safetensors_view(st, "b.weight", &v), DFX_OK);
    ck_assert_float_eq(((float *)v.data)[1], 10.5f);
    ck_assert_int_eq(dfx_safetensors_view(st, "zz", &v), DFX_ERR_NOT_FOUND);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "model.safetensors.index.json: no tensor named 'zz'"));
    dfx_safetensors_close(st);

    /* a shard file that does not exist */
    write_text("missing-shard.index.json",
               "{\"weight_map\": {\"a.weight\": \"" SHARD1 "\", \"x\": \"model-00003-of-00003.safetensors\"}}");
    in_tmp(path, sizeof path, "missing-shard.index.json");
    EXPECT_OPEN_ERROR(path, DFX_ERR_NOT_FOUND,
                      "missing-shard.index.json: shard 'model-00003-of-00003.safetensors' listed in "
                      "weight_map: ", "model-00003-of-00003.safetensors: cannot open: No such file");

    /* a tensor the shard does not have */
    write_text("missing-tensor.index.json",
               "{\"weight_map\": {\"a.weight\": \"" SHARD1 "\", \"d.weight\": \"" SHARD1 "\"}}");
    in_tmp(path, sizeof path, "missing-tensor.index.json");
    EXPECT_OPEN_ERROR(path, DFX_ERR_NOT_FOUND,
                      "missing-tensor.index.json: tensor 'd.weight' is mapped to '" SHARD1
                      "' but that file has no such tensor");

    /* a tensor in the other shard */
    write_text("wrong-shard.index.json",
               "{\"weight_map\": {\"a.weight\": \"" SHARD2 "\", \"c.bias\": \"" SHARD1 "\"}}");
    in_tmp(path, sizeof path, "wrong-shard.index.json");
    EXPECT_OPEN_ERROR(path, DFX_ERR_FORMAT,
                      "wrong-shard.index.json: tensor 'a.weight' is mapped to '" SHARD2
                      "' but it is in '" SHARD1 "'");

    /* one name in two shards */
    const char *n3[] = {"a.weight"};
    write_shard("dup.safetensors", 1, n3, 0.0f);
    write_text("dup.index.json",
               "{\"weight_map\": {\"a.weight\": \"" SHARD1 "\", \"q\": \"dup.safetensors\"}}");
    in_tmp(path, sizeof path, "dup.index.json");
    EXPECT_OPEN_ERROR(path, DFX_ERR_FORMAT, "dup.index.json: tensor 'a.weight' is in both",
                      "dup.safetensors", SHARD1);

    /* malformed indexes */
    write_text("bad.index.json", "{\"metadata\": {}}");
    in_tmp(path, sizeof path, "bad.index.json");
    EXPECT_OPEN_ERROR(path, DFX_ERR_FORMAT,
                      "bad.index.json: \"weight_map\" is missing, expected an object");
    write_text("bad.index.json", "{\"weight_map\": {\"a\": 3}}");
    EXPECT_OPEN_ERROR(path, DFX_ERR_FORMAT, "bad.index.json: weight_map entry 'a' is a number, "
                      "expected the name of a shard file");
    write_text("bad.index.json", "{\"weight_map\": {\"a\": \"/etc/passwd\"}}");
    EXPECT_OPEN_ERROR(path, DFX_ERR_FORMAT, "weight_map entry 'a' is not a relative file name");
    write_text("bad.index.json", "{\"weight_map\": {\"a.weight\": \"" SHARD1 "\", \"a.weight\": \"" SHARD1 "\"}}");
    EXPECT_OPEN_ERROR(path, DFX_ERR_FORMAT, "tensor 'a.weight' appears more than once in weight_map");
    write_text("bad.index.json", "[1]");
    EXPECT_OPEN_ERROR(path, DFX_ERR_FORMAT, "bad.index.json: the index is an array");
    write_text("bad.index.json", "{\"weight_map\": {\"a\": \"x\"},}");
    EXPECT_OPEN_ERROR(path, DFX_ERR_FORMAT, "bad.index.json:1:27: expected a string key after ','");
    write_text("bad.index.json", "{\"metadata\": [], \"weight_map\": {}}");
    EXPECT_OPEN_ERROR(path, DFX_ERR_FORMAT, "bad.index.json: \"metadata\" is an array");
    write_bytes(in_tmp(path, sizeof path, "corrupt.safetensors"), "\x04\0\0\0\0\0\0\0{}xx", 12);
    in_tmp(path, sizeof path, "bad.index.json");
    write_text("bad.index.json", "{\"weight_map\": {\"a\": \"corrupt.safetensors\"}}");
    EXPECT_OPEN_ERROR(path, DFX_ERR_FORMAT,
                      "bad.index.json: shard 'corrupt.safetensors' listed in weight_map: ",
                      "corrupt.safetensors header:1:3: expected end of input");

    /* an empty weight_map is an empty set */
    write_text("empty.index.json", "{\"weight_map\": {}}");
    in_tmp(path, sizeof path, "empty.index.json");
    st = open_ok(path);
    ck_assert_int_eq(dfx_safetensors_count(st), 0);
    dfx_safetensors_close(st);
}
END_TEST

static int fixture_files;
static int64_t fixture_tensors;

static int check_fixture(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    size_t n = strlen(path);
    if (flag != FTW_F || n < 12 || strcmp(path + n - 12, ".safetensors") != 0)
        return 0;
    dfx_safetensors *st = open_ok(path);
    for (int64_t i = 0; i < dfx_safetensors_count(st); i++) {
        const char *name = dfx_safetensors_name(st, i);
        dfx_tensor v, *r = NULL;
        ck_assert_int_eq(dfx_safetensors_view(st, name, &v), DFX_OK);
        ck_assert_int_eq(dfx_safetensors_read(st, name, v.dtype, &r), DFX_OK);
        ck_assert_int_eq(memcmp(r->data, v.data, dfx_tensor_nbytes(&v)), 0);
        dfx_tensor_destroy(r);
        fixture_tensors++;
    }
    dfx_safetensors_close(st);
    fixture_files++;
    return 0;
}

static void expect_shape(const char *dir, const char *rel, const char *name, dfx_dtype dtype,
                         const char *shape)
{
    char path[4300], buf[128];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    if (access(path, R_OK) != 0)
        return;
    dfx_safetensors *st = open_ok(path);
    dfx_tensor v;
    ck_assert_msg(dfx_safetensors_view(st, name, &v) == DFX_OK, "%s", dfx_error_message());
    ck_assert_str_eq(dfx_dtype_name(v.dtype), dfx_dtype_name(dtype));
    ck_assert_str_eq(dfx_tensor_shape_str(&v, buf, sizeof buf), shape);
    dfx_safetensors_close(st);
}

START_TEST(test_fixtures)
{
    const char *dir = test_fixtures_dir();
    if (!dir) {
        fprintf(stderr, "test_safetensors: fixtures folder not found; fixture checks skipped\n");
        return;
    }
    fixture_files = 0;
    fixture_tensors = 0;
    ck_assert_int_eq(nftw(dir, check_fixture, 16, FTW_PHYS), 0);
    ck_assert_int_gt(fixture_files, 0);
    ck_assert_int_gt(fixture_tensors, 0);

    expect_shape(dir, "rng/rng.safetensors", "randn_seed0_1x4x8x8", DFX_DTYPE_F32, "[1,4,8,8]");
    expect_shape(dir, "rng/rng.safetensors", "mt19937_seed0_first64_u32_as_i64", DFX_DTYPE_I64, "[64]");
    expect_shape(dir, "schedulers/heun_sd/N10.safetensors", "timesteps", DFX_DTYPE_F32, "[19]");
    expect_shape(dir, "schedulers/heun_sd/N10.safetensors", "step_timesteps", DFX_DTYPE_F64, "[19]");
    expect_shape(dir, "schedulers/ddim_linear_alpha1_clip/N10.safetensors", "final_alpha_cumprod",
                 DFX_DTYPE_F32, "[]");
    expect_shape(dir, "ddpm/ddpm_unet_a/expected_forward.safetensors", "input_timesteps_batch",
                 DFX_DTYPE_I64, "[2]");

    char path[4300];
    snprintf(path, sizeof path, "%s/ddpm/ddpm_unet_a/unet/diffusion_pytorch_model.safetensors", dir);
    if (access(path, R_OK) == 0) {
        dfx_safetensors *st = open_ok(path);
        ck_assert_int_eq(dfx_safetensors_count(st), 144);
        ck_assert_str_eq(dfx_safetensors_metadata(st, "format"), "pt");
        dfx_safetensors_close(st);
    }
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
    snprintf(tmpdir, sizeof tmpdir, "/tmp/dfx_st_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void)
{
    nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static Suite *safetensors_suite(void)
{
    Suite *s = suite_create("safetensors");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_round_trip_all_dtypes);
    tcase_add_test(tc, test_view_and_read);
    tcase_add_test(tc, test_unaligned);
    tcase_add_test(tc, test_empty_sets);
    tcase_add_test(tc, test_hostile_headers);
    tcase_add_test(tc, test_hostile_lengths);
    tcase_add_test(tc, test_write_errors);
    tcase_add_test(tc, test_sharded);
    tcase_add_test(tc, test_fixtures);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run_suite(safetensors_suite());
}
