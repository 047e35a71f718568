/* The CLIP tokenizer against transformers 4.38's CLIPTokenizer (with ftfy
 * 6.1.1, and without it): every case of sd_tiny_expected and
 * sd2_tiny_expected tokenizer_cases.json, whatever cases the file holds —
 * the padded and untruncated ids, the BPE tokens, the text after ftfy,
 * whitespace_clean and lower(), the ids without ftfy, and SD2's ids with
 * SD1's padding. */
#include "core/text/text_internal.h"
#include "dfx/text.h"
#include "testutil.h"

/* Failures are counted and printed, so one run shows every differing case. */
static int failures;

static void mismatch(const char *file, const char *prompt, const char *what, const char *detail)
{
    if (failures++ >= 50)
        return;
    fprintf(stderr, "%s: prompt \"%s\": %s differs%s%s\n", file, prompt, what, detail ? ": " : "",
            detail ? detail : "");
}

static dfx_json *load_json(const char *path)
{
    dfx_json *doc;
    ck_assert_msg(dfx_json_parse_file(path, &doc) == DFX_OK, "%s", dfx_error_message());
    return doc;
}

static int64_t member_int(const dfx_json *obj, const char *key)
{
    int64_t v;
    ck_assert_msg(dfx_json_int(dfx_json_get(obj, key), &v), "no integer \"%s\"", key);
    return v;
}

/* Compares ids[0..n) with a JSON array of integers; prints the first
 * difference. */
static void check_ids(const char *file, const char *prompt, const char *what, const int64_t *ids, int64_t n,
                      const dfx_json *want)
{
    ck_assert_msg(dfx_json_type_of(want) == DFX_JSON_ARRAY, "%s: \"%s\" is not a list", file, what);
    int64_t m = dfx_json_size(want);
    for (int64_t i = 0; i < (n > m ? n : m); i++) {
        int64_t w = -1;
        if (i < m)
            ck_assert(dfx_json_int(dfx_json_at(want, i), &w));
        if (i >= n || i >= m || ids[i] != w) {
            char detail[160];
            snprintf(detail, sizeof detail, "length %lld vs %lld, first difference at %lld: %lld vs %lld",
                     (long long)n, (long long)m, (long long)i, i < n ? (long long)ids[i] : -1LL, (long long)w);
            mismatch(file, prompt, what, detail);
            return;
        }
    }
}

static char *utf8_of(const dfx__ustr *s)
{
    char *p = malloc(4 * s->n + 1);
    ck_assert_ptr_nonnull(p);
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++)
        k += dfx__utf8_put(s->c[i], (unsigned char *)p + k);
    p[k] = '\0';
    return p;
}

/* One tokenizer_cases.json against the tokenizer of `folder`; `sd1` (may
 * be NULL) is SD1's tokenizer for SD2's input_ids_padded77_sd1_tokenizer. */
static int check_cases(const char *cases_rel, const char *folder_rel, const char *sd1_folder_rel)
{
    char cases_path[4200], folder[4200], sd1_folder[4200];
    snprintf(cases_path, sizeof cases_path, "%s", test_fixture(cases_rel));
    snprintf(folder, sizeof folder, "%s", test_fixture(folder_rel));
    snprintf(sd1_folder, sizeof sd1_folder, "%s", sd1_folder_rel ? test_fixture(sd1_folder_rel) : "");
    dfx_json *doc = load_json(cases_path);
    dfx_clip_tokenizer *tok, *sd1 = NULL;
    ck_assert_msg(dfx_clip_tokenizer_open(&tok, folder) == DFX_OK, "%s", dfx_error_message());
    if (sd1_folder_rel)
        ck_assert_msg(dfx_clip_tokenizer_open(&sd1, sd1_folder) == DFX_OK, "%s", dfx_error_message());

    ck_assert_int_eq(dfx_clip_tokenizer_vocab_size(tok), member_int(doc, "vocab_size"));
    ck_assert_int_eq(dfx_clip_tokenizer_bos(tok), member_int(doc, "bos_token_id"));
    ck_assert_int_eq(dfx_clip_tokenizer_eos(tok), member_int(doc, "eos_token_id"));
    ck_assert_int_eq(dfx_clip_tokenizer_pad(tok), member_int(doc, "pad_token_id"));
    ck_assert_int_eq(dfx_clip_tokenizer_max_length(tok), member_int(doc, "model_max_length"));
    int64_t max = dfx_clip_tokenizer_max_length(tok);

    const dfx_json *cases = dfx_json_get(doc, "cases");
    ck_assert_int_gt(dfx_json_size(cases), 0);
    int before = failures;
    for (int64_t c = 0; c < dfx_json_size(cases); c++) {
        const dfx_json *cs = dfx_json_at(cases, c);
        const dfx_json *pj = dfx_json_get(cs, "prompt");
        const char *prompt = dfx_json_string(pj);
        ck_assert_ptr_nonnull(prompt);
        if (strlen(prompt) != dfx_json_string_len(pj)) {
            /* a C string cannot hold it: dfx's API takes NUL-terminated text */
            printf("%s: case %lld holds a NUL character: not a prompt dfx can be given, skipped\n", cases_rel,
                   (long long)c);
            continue;
        }
        int64_t padded[4096], dropped, *ids, n;
        ck_assert(max <= 4096);

        ck_assert_msg(dfx_clip_tokenizer_encode_padded(tok, prompt, true, padded, &dropped) == DFX_OK, "%s",
                      dfx_error_message());
        check_ids(cases_rel, prompt, "input_ids_padded77", padded, max, dfx_json_get(cs, "input_ids_padded77"));

        ck_assert_msg(dfx_clip_tokenizer_encode(tok, prompt, true, &ids, &n) == DFX_OK, "%s", dfx_error_message());
        check_ids(cases_rel, prompt, "input_ids_untruncated", ids, n, dfx_json_get(cs, "input_ids_untruncated"));
        if (dropped != (n - 2 > max - 2 ? n - max : 0))
            mismatch(cases_rel, prompt, "the truncated count", NULL);

        /* tokenize()'s strings are the tokens of the ids between bos and eos */
        const dfx_json *bpe = dfx_json_get(cs, "bpe_tokens");
        bool same = dfx_json_size(bpe) == n - 2;
        for (int64_t i = 0; same && i < n - 2; i++) {
            const char *t = dfx_clip_tokenizer_token(tok, ids[i + 1]);
            same = t && strcmp(t, dfx_json_string(dfx_json_at(bpe, i))) == 0;
        }
        if (!same)
            mismatch(cases_rel, prompt, "bpe_tokens", NULL);
        free(ids);

        const dfx_json *clean = dfx_json_get(cs, "text_after_ftfy_and_whitespace_clean_lower");
        if (clean) {
            dfx__ustr in = {0}, out = {0};
            ck_assert_int_eq(dfx__utf8_decode(prompt, strlen(prompt), &in), DFX_OK);
            ck_assert_int_eq(dfx__clip_clean_text(in.c, in.n, true, &out), DFX_OK);
            char *got = utf8_of(&out);
            if (strcmp(got, dfx_json_string(clean)) != 0)
                mismatch(cases_rel, prompt, "text_after_ftfy_and_whitespace_clean_lower", got);
            free(got);
            dfx__ustr_fini(&in);
            dfx__ustr_fini(&out);
        }
        const dfx_json *noftfy = dfx_json_get(cs, "input_ids_padded77_without_ftfy");
        if (noftfy) {
            ck_assert_msg(dfx_clip_tokenizer_encode_padded(tok, prompt, false, padded, &dropped) == DFX_OK, "%s",
                          dfx_error_message());
            check_ids(cases_rel, prompt, "input_ids_padded77_without_ftfy", padded, max, noftfy);
        }
        const dfx_json *noftfy_full = dfx_json_get(cs, "input_ids_untruncated_without_ftfy");
        if (noftfy_full) {
            ck_assert_msg(dfx_clip_tokenizer_encode(tok, prompt, false, &ids, &n) == DFX_OK, "%s",
                          dfx_error_message());
            check_ids(cases_rel, prompt, "input_ids_untruncated_without_ftfy", ids, n, noftfy_full);
            free(ids);
        }
        const dfx_json *sd1pad = dfx_json_get(cs, "input_ids_padded77_sd1_tokenizer");
        if (sd1pad && sd1) {
            ck_assert_msg(dfx_clip_tokenizer_encode_padded(sd1, prompt, true, padded, &dropped) == DFX_OK, "%s",
                          dfx_error_message());
            check_ids(cases_rel, prompt, "input_ids_padded77_sd1_tokenizer", padded, max, sd1pad);
        }
    }
    int64_t ncases = dfx_json_size(cases);
    printf("%s: %lld cases, %d differences\n", cases_rel, (long long)ncases, failures - before);
    dfx_clip_tokenizer_close(tok);
    dfx_clip_tokenizer_close(sd1);
    dfx_json_destroy(doc);
    return (int)ncases;
}

START_TEST(sd_tiny_cases)
{
    check_cases("sd_tiny_expected/tokenizer_cases.json", "sd_tiny/tokenizer", NULL);
    ck_assert_msg(failures == 0, "%d differences (listed above)", failures);
}
END_TEST

START_TEST(sd2_tiny_cases)
{
    /* SD2's pad "!" is an added token: every literal "!" becomes id 0 */
    check_cases("sd2_tiny_expected/tokenizer_cases.json", "sd2_tiny/tokenizer", "sd_tiny/tokenizer");
    ck_assert_msg(failures == 0, "%d differences (listed above)", failures);
}
END_TEST

int main(void)
{
    test_require_fixtures("tokenizer parity");
    Suite *s = suite_create("tokenizer_parity");
    TCase *tc = tcase_create("transformers");
    tcase_add_test(tc, sd_tiny_cases);
    tcase_add_test(tc, sd2_tiny_cases);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
