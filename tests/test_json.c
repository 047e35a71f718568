/* The JSON reader: every value type, Python's NaN/Infinity, exact integers,
 * escapes and surrogates, and one test per error class pinning its message
 * (origin:line:col included). */
#include <ftw.h>
#include <stdint.h>

#include "testutil.h"

static dfx_json *parse_ok(const char *text)
{
    dfx_json *doc = NULL;
    dfx_status st = dfx_json_parse(text, strlen(text), "t.json", &doc);
    ck_assert_msg(st == DFX_OK, "parse of <%s> failed: %s", text, dfx_error_message());
    ck_assert_ptr_nonnull(doc);
    return doc;
}

/* Parses text (len bytes) expecting a format error whose message holds every
 * given substring (NULL-terminated list). */
static void expect_error_n(const char *text, size_t len, const char *const *subs)
{
    dfx_json *doc = (dfx_json *)&doc;
    dfx_status st = dfx_json_parse(text, len, "t.json", &doc);
    ck_assert_msg(st == DFX_ERR_FORMAT, "<%.*s> parsed (status %d)", (int)len, text, st);
    ck_assert_ptr_null(doc);
    const char *msg = dfx_error_message();
    for (; *subs; subs++)
        ck_assert_msg(strstr(msg, *subs), "<%.*s>: message \"%s\" lacks \"%s\"", (int)len,
                      text, msg, *subs);
}

#define EXPECT_ERROR(text, ...)                                                \
    do {                                                                       \
        const char *subs_[] = {__VA_ARGS__, NULL};                             \
        expect_error_n((text), strlen(text), subs_);                           \
    } while (0)

START_TEST(test_scalars)
{
    dfx_json *d = parse_ok("null");
    ck_assert_int_eq(dfx_json_type_of(d), DFX_JSON_NULL);
    ck_assert(isnan(dfx_json_number(d)));
    ck_assert_ptr_null(dfx_json_string(d));
    dfx_json_destroy(d);

    d = parse_ok(" true ");
    ck_assert_int_eq(dfx_json_type_of(d), DFX_JSON_BOOL);
    ck_assert(dfx_json_bool(d));
    dfx_json_destroy(d);

    d = parse_ok("false");
    ck_assert_int_eq(dfx_json_type_of(d), DFX_JSON_BOOL);
    ck_assert(!dfx_json_bool(d));
    dfx_json_destroy(d);

    d = parse_ok("\t\r\n 2.5 \n");
    ck_assert_int_eq(dfx_json_type_of(d), DFX_JSON_NUMBER);
    ck_assert_double_eq(dfx_json_number(d), 2.5);
    ck_assert(!dfx_json_bool(d));
    ck_assert_int_eq(dfx_json_size(d), 0);
    ck_assert_ptr_null(dfx_json_at(d, 0));
    ck_assert_ptr_null(dfx_json_get(d, "x"));
    dfx_json_destroy(d);

    d = parse_ok("\"hello\"");
    ck_assert_int_eq(dfx_json_type_of(d), DFX_JSON_STRING);
    ck_assert_str_eq(dfx_json_string(d), "hello");
    ck_assert_uint_eq(dfx_json_string_len(d), 5);
    ck_assert(isnan(dfx_json_number(d)));
    dfx_json_destroy(d);

    d = parse_ok("\"\"");
    ck_assert_str_eq(dfx_json_string(d), "");
    ck_assert_uint_eq(dfx_json_string_len(d), 0);
    dfx_json_destroy(d);

    ck_assert_str_eq(dfx_json_type_name(DFX_JSON_NULL), "null");
    ck_assert_str_eq(dfx_json_type_name(DFX_JSON_BOOL), "boolean");
    ck_assert_str_eq(dfx_json_type_name(DFX_JSON_NUMBER), "number");
    ck_assert_str_eq(dfx_json_type_name(DFX_JSON_STRING), "string");
    ck_assert_str_eq(dfx_json_type_name(DFX_JSON_ARRAY), "array");
    ck_assert_str_eq(dfx_json_type_name(DFX_JSON_OBJECT), "object");

    /* NULL-safe accessors let lookups chain */
    ck_assert_int_eq(dfx_json_type_of(NULL), DFX_JSON_NULL);
    ck_assert_ptr_null(dfx_json_get(NULL, "a"));
    ck_assert_int_eq(dfx_json_size(NULL), 0);
    dfx_json_destroy(NULL);
}
END_TEST

START_TEST(test_containers)
{
    const char *text =
        "{\n"
        "  \"name\": \"ddim\",\n"
        "  \"steps\": [1, 2, 3],\n"
        "  \"nested\": {\"a\": [], \"b\": {}, \"c\": [[null]]},\n"
        "  \"dup\": 1, \"dup\": 2\n"
        "}";
    dfx_json *d = parse_ok(text);
    ck_assert_int_eq(dfx_json_type_of(d), DFX_JSON_OBJECT);
    ck_assert_int_eq(dfx_json_size(d), 5);
    ck_assert_str_eq(dfx_json_key_at(d, 0), "name");
    ck_assert_str_eq(dfx_json_key_at(d, 4), "dup");
    ck_assert_ptr_null(dfx_json_key_at(d, 5));
    ck_assert_ptr_null(dfx_json_key_at(d, -1));
    ck_assert_str_eq(dfx_json_string(dfx_json_value_at(d, 0)), "ddim");
    ck_assert_str_eq(dfx_json_string(dfx_json_get(d, "name")), "ddim");
    ck_assert_ptr_null(dfx_json_get(d, "nam"));
    ck_assert_ptr_null(dfx_json_get(d, "names"));

    /* the last of repeated keys wins */
    int64_t i = 0;
    ck_assert(dfx_json_int(dfx_json_get(d, "dup"), &i));
    ck_assert_int_eq(i, 2);

    const dfx_json *steps = dfx_json_get(d, "steps");
    ck_assert_int_eq(dfx_json_type_of(steps), DFX_JSON_ARRAY);
    ck_assert_int_eq(dfx_json_size(steps), 3);
    for (int k = 0; k < 3; k++) {
        ck_assert(dfx_json_int(dfx_json_at(steps, k), &i));
        ck_assert_int_eq(i, k + 1);
    }
    ck_assert_ptr_null(dfx_json_at(steps, 3));
    ck_assert_ptr_null(dfx_json_at(steps, -1));
    ck_assert_ptr_null(dfx_json_key_at(steps, 0));
    ck_assert_ptr_null(dfx_json_value_at(steps, 0));
    ck_assert_ptr_null(dfx_json_at(d, 0));

    const dfx_json *nested = dfx_json_get(d, "nested");
    ck_assert_int_eq(dfx_json_size(dfx_json_get(nested, "a")), 0);
    ck_assert_int_eq(dfx_json_type_of(dfx_json_get(nested, "a")), DFX_JSON_ARRAY);
    ck_assert_int_eq(dfx_json_type_of(dfx_json_get(nested, "b")), DFX_JSON_OBJECT);
    ck_assert_int_eq(dfx_json_size(dfx_json_get(nested, "b")), 0);
    const dfx_json *c = dfx_json_at(dfx_json_at(dfx_json_get(nested, "c"), 0), 0);
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(dfx_json_type_of(c), DFX_JSON_NULL);

    /* positions: 1-based line and column of each value */
    ck_assert_int_eq(dfx_json_line(d), 1);
    ck_assert_int_eq(dfx_json_column(d), 1);
    ck_assert_int_eq(dfx_json_line(dfx_json_get(d, "name")), 2);
    ck_assert_int_eq(dfx_json_column(dfx_json_get(d, "name")), 11);
    ck_assert_int_eq(dfx_json_line(dfx_json_at(steps, 2)), 3);
    ck_assert_int_eq(dfx_json_column(dfx_json_at(steps, 2)), 19);
    ck_assert_int_eq(dfx_json_line(nested), 4);
    ck_assert_int_eq(dfx_json_column(nested), 13);
    dfx_json_destroy(d);

    d = parse_ok("[]");
    ck_assert_int_eq(dfx_json_type_of(d), DFX_JSON_ARRAY);
    ck_assert_int_eq(dfx_json_size(d), 0);
    dfx_json_destroy(d);
    d = parse_ok(" { } ");
    ck_assert_int_eq(dfx_json_type_of(d), DFX_JSON_OBJECT);
    ck_assert_int_eq(dfx_json_size(d), 0);
    dfx_json_destroy(d);
}
END_TEST

START_TEST(test_python_specials)
{
    dfx_json *d = parse_ok("{\"lambda_min_clipped\": -Infinity, \"hi\": Infinity, "
                           "\"nan\": NaN, \"arr\": [NaN,-Infinity]}");
    double v = dfx_json_number(dfx_json_get(d, "lambda_min_clipped"));
    ck_assert(isinf(v) && v < 0);
    v = dfx_json_number(dfx_json_get(d, "hi"));
    ck_assert(isinf(v) && v > 0);
    ck_assert(isnan(dfx_json_number(dfx_json_get(d, "nan"))));
    ck_assert_int_eq(dfx_json_type_of(dfx_json_get(d, "nan")), DFX_JSON_NUMBER);
    int64_t i;
    ck_assert(!dfx_json_int(dfx_json_get(d, "nan"), &i));
    ck_assert(!dfx_json_int(dfx_json_get(d, "hi"), &i));
    ck_assert(isinf(dfx_json_number(dfx_json_at(dfx_json_get(d, "arr"), 1))));
    dfx_json_destroy(d);

    EXPECT_ERROR("-NaN", "t.json:1:2: expected a digit after '-', found 'NaN'");
    EXPECT_ERROR("nan", "t.json:1:1: expected a value", "found 'nan'");
    EXPECT_ERROR("Infinit", "found 'Infinit'");
    EXPECT_ERROR("+Infinity", "t.json:1:1: expected a value", "found '+Infinity'");
}
END_TEST

static void check_int(const char *text, int64_t want)
{
    dfx_json *d = parse_ok(text);
    int64_t got = 0;
    ck_assert_msg(dfx_json_int(d, &got), "%s is not an int64", text);
    ck_assert_msg(got == want, "%s: got %lld", text, (long long)got);
    ck_assert_double_eq(dfx_json_number(d), (double)want);
    dfx_json_destroy(d);
}

static void check_not_int(const char *text, double want)
{
    dfx_json *d = parse_ok(text);
    int64_t got = 12345;
    ck_assert_msg(!dfx_json_int(d, &got), "%s reads as an int64", text);
    ck_assert_int_eq(got, 12345);
    ck_assert_msg(dfx_json_number(d) == want, "%s: %.17g != %.17g", text,
                  dfx_json_number(d), want);
    dfx_json_destroy(d);
}

START_TEST(test_numbers)
{
    check_int("0", 0);
    check_int("-0", 0);
    check_int("7", 7);
    check_int("-123", -123);
    check_int("1000", 1000);
    check_int("9223372036854775807", INT64_MAX);
    check_int("-9223372036854775808", INT64_MIN);
    /* 2^53 + 1 stays exact as an integer, not as a double */
    check_int("9007199254740993", 9007199254740993LL);

    check_not_int("9223372036854775808", 9223372036854775808.0);
    check_not_int("-9223372036854775809", -9223372036854775808.0);
    check_not_int("18446744073709551616", 18446744073709551616.0);
    check_not_int("123456789012345678901234567890", 123456789012345678901234567890.0);
    check_not_int("1e2", 100.0);
    check_not_int("1.0", 1.0);
    check_not_int("1E+3", 1000.0);
    check_not_int("-2.5e-3", -0.0025);
    check_not_int("0.1", 0.1);
    check_not_int("0.00085", 0.00085);
    check_not_int("1.7976931348623157e308", 1.7976931348623157e308);
    check_not_int("5e-324", 5e-324);
    check_not_int("1e-400", 0.0);
    check_not_int("2.2250738585072011e-308", 2.2250738585072011e-308);

    /* a literal longer than any internal buffer */
    char big[600];
    memset(big, '1', 500);
    memcpy(big + 500, ".5e-480", 8);
    dfx_json *d = parse_ok(big);
    ck_assert_double_eq_tol(dfx_json_number(d), 1.1111111111111111e19, 1e4);
    dfx_json_destroy(d);

    /* a negative zero keeps its sign as a double */
    d = parse_ok("-0.0");
    ck_assert(signbit(dfx_json_number(d)));
    dfx_json_destroy(d);
}
END_TEST

START_TEST(test_number_errors)
{
    EXPECT_ERROR("01", "t.json:1:1: leading zeros are not allowed");
    EXPECT_ERROR("[-01]", "t.json:1:2: leading zeros");
    EXPECT_ERROR("-", "t.json:1:2: expected a digit after '-', found end of input");
    EXPECT_ERROR("- 1", "expected a digit after '-', found ' '");
    EXPECT_ERROR("1.", "t.json:1:3: expected a digit after '.', found end of input");
    EXPECT_ERROR("1.e5", "t.json:1:3: expected a digit after '.', found 'e5'");
    EXPECT_ERROR(".5", "t.json:1:1: expected a value", "found '.5'");
    EXPECT_ERROR("1e", "t.json:1:3: expected a digit in the exponent, found end of input");
    EXPECT_ERROR("1e+", "expected a digit in the exponent");
    EXPECT_ERROR("+1", "expected a value", "found '+1'");
    EXPECT_ERROR("0x10", "t.json:1:2: expected end of input after the top-level value, found 'x10'");
    EXPECT_ERROR("[1e400]", "t.json:1:2: number 1e400 is too large for a double");
    EXPECT_ERROR("-1e99999", "number -1e99999 is too large");
    EXPECT_ERROR("1.5.2", "expected end of input", "found '.2'");
}
END_TEST

START_TEST(test_strings)
{
    dfx_json *d = parse_ok("\"q\\\" b\\\\ s\\/ \\b\\f\\n\\r\\t\"");
    ck_assert_str_eq(dfx_json_string(d), "q\" b\\ s/ \b\f\n\r\t");
    dfx_json_destroy(d);

    d = parse_ok("\"caf\\u00e9 \\u20AC \\ud83d\\ude00 \\u0041\"");
    ck_assert_str_eq(dfx_json_string(d), "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 A");
    dfx_json_destroy(d);

    /* raw UTF-8 passes through untouched, up to U+10FFFF */
    d = parse_ok("\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\x7f\"");
    ck_assert_str_eq(dfx_json_string(d), "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\x7f");
    dfx_json_destroy(d);

    /* an escaped NUL is kept; the C string stops there */
    d = parse_ok("\"a\\u0000b\"");
    ck_assert_uint_eq(dfx_json_string_len(d), 3);
    ck_assert_uint_eq(strlen(dfx_json_string(d)), 1);
    ck_assert_int_eq(memcmp(dfx_json_string(d), "a\0b", 4), 0);
    dfx_json_destroy(d);

    /* keys decode like strings */
    d = parse_ok("{\"k\\u00e9y\": 1, \"\\\"\": 2}");
    ck_assert_str_eq(dfx_json_key_at(d, 0), "k\xc3\xa9y");
    ck_assert_ptr_nonnull(dfx_json_get(d, "k\xc3\xa9y"));
    ck_assert_ptr_nonnull(dfx_json_get(d, "\""));
    dfx_json_destroy(d);
}
END_TEST

START_TEST(test_string_errors)
{
    EXPECT_ERROR("\"abc", "t.json:1:1: unterminated string");
    EXPECT_ERROR("[\"abc\\\"]", "t.json:1:2: unterminated string");
    EXPECT_ERROR("\"ab\\", "unterminated string");
    EXPECT_ERROR("\"a\nb\"", "t.json:1:3: control character U+000A in a string");
    EXPECT_ERROR("\"a\tb\"", "t.json:1:3: control character U+0009 in a string");
    EXPECT_ERROR("\"\\x\"", "t.json:1:2: invalid escape", "found '\\' followed by 'x'");
    EXPECT_ERROR("\"\\'\"", "invalid escape", "followed by '''");
    EXPECT_ERROR("\"\\u12\"", "t.json:1:2: invalid \\u escape: expected 4 hex digits");
    EXPECT_ERROR("\"\\u12g4\"", "expected 4 hex digits");
    EXPECT_ERROR("\"\\ud800\"", "t.json:1:2: invalid \\u escape: lone high surrogate \\uD800");
    EXPECT_ERROR("\"\\ud800\\u0041\"", "lone high surrogate \\uD800");
    EXPECT_ERROR("\"\\ud800\\ud800\"", "lone high surrogate");
    EXPECT_ERROR("\"x\\udc00\"", "t.json:1:3: invalid \\u escape: lone low surrogate \\uDC00");
    EXPECT_ERROR("\"\xff\"", "t.json:1:2: invalid UTF-8 in a string (byte 0xFF)");
    EXPECT_ERROR("\"\xc0\x80\"", "invalid UTF-8 in a string (byte 0xC0)");
    EXPECT_ERROR("\"\xe0\x80\xaf\"", "invalid UTF-8 in a string (byte 0xE0)");
    EXPECT_ERROR("\"\xed\xa0\x80\"", "invalid UTF-8 in a string (byte 0xED)");
    EXPECT_ERROR("\"\xf4\x90\x80\x80\"", "invalid UTF-8");
    EXPECT_ERROR("\"ab\xe2\x82\"", "t.json:1:4: invalid UTF-8");
    EXPECT_ERROR("\"\x80\"", "invalid UTF-8 in a string (byte 0x80)");
    EXPECT_ERROR("{\"a\nb\": 1}", "t.json:1:4: control character U+000A");
}
END_TEST

START_TEST(test_structure_errors)
{
    EXPECT_ERROR("", "t.json:1:1: expected a value, found end of input");
    EXPECT_ERROR("  \n ", "t.json:2:2: expected a value, found end of input");
    EXPECT_ERROR("[1,]", "t.json:1:4: expected a value after ',', found ']' (trailing commas are not allowed)");
    EXPECT_ERROR("{\"a\":1,}", "t.json:1:8: expected a string key after ',', found '}' (trailing commas");
    EXPECT_ERROR("[1 2]", "t.json:1:4: expected ',' or ']' after an array element, found '2'");
    EXPECT_ERROR("{\"a\":1 \"b\":2}", "t.json:1:8: expected ',' or '}' after an object member, found '\"'");
    EXPECT_ERROR("{\"a\" 1}", "t.json:1:6: expected ':' after the object key, found '1'");
    EXPECT_ERROR("{a: 1}", "t.json:1:2: expected a string key or '}', found 'a'");
    EXPECT_ERROR("{'a': 1}", "expected a string key or '}', found '''");
    EXPECT_ERROR("{\"a\":1,,}", "t.json:1:8: expected a string key after ',', found ','");
    EXPECT_ERROR("[,1]", "t.json:1:2: expected a value", "found ','");
    EXPECT_ERROR("[1,2", "t.json:1:5: expected ',' or ']' after an array element, found end of input");
    EXPECT_ERROR("{\"a\":", "t.json:1:6: expected a value", "found end of input");
    EXPECT_ERROR("{\"a\":[1}", "t.json:1:8: expected ',' or ']'", "found '}'");
    EXPECT_ERROR("[1]]", "t.json:1:4: expected end of input after the top-level value, found ']'");
    EXPECT_ERROR("{} {}", "t.json:1:4: expected end of input", "found '{'");
    EXPECT_ERROR("// c\n{}", "t.json:1:1: expected a value", "found a comment (JSON has no comments)");
    EXPECT_ERROR("[1, /* c */ 2]", "t.json:1:5:", "a comment");
    EXPECT_ERROR("{\"a\": True}", "t.json:1:7: expected a value", "found 'True' (JSON spells it true)");
    EXPECT_ERROR("[None]", "found 'None' (JSON spells it null)");
    EXPECT_ERROR("[False]", "found 'False' (JSON spells it false)");
    EXPECT_ERROR("tru", "t.json:1:1: expected a value", "found 'tru'");
    EXPECT_ERROR("nul", "found 'nul'");
    EXPECT_ERROR("truex", "t.json:1:5: expected end of input", "found 'x'");
    EXPECT_ERROR("\xef\xbb\xbf{}", "t.json:1:1: expected a value", "byte order mark");
    EXPECT_ERROR("[\x01]", "found control character U+0001");
    EXPECT_ERROR("[\xc3\xa9]", "found '\xc3\xa9' (U+00E9)");
    EXPECT_ERROR("[\xff]", "found byte 0xFF (not UTF-8)");
    EXPECT_ERROR("\x0c{}", "t.json:1:1: expected a value", "found control character U+000C");

    /* a NUL byte inside the given length is not the end of the text */
    const char nul[] = "[1]\0";
    const char *subs[] = {"t.json:1:4: expected end of input", "control character U+0000", NULL};
    expect_error_n(nul, 4, subs);
}
END_TEST

START_TEST(test_positions)
{
    EXPECT_ERROR("{\n  \"a\": 1,\n  \"b\": tru\n}", "t.json:3:8: expected a value");
    EXPECT_ERROR("\r\n\r\n  [1,\n   2,\n   x]", "t.json:5:4:", "found 'x'");
    /* columns count characters, not bytes */
    EXPECT_ERROR("[\"\xc3\xa9\xe2\x82\xac\", x]", "t.json:1:8:");
    EXPECT_ERROR("[\"\xf0\x9f\x98\x80\", \"\\q\"]", "t.json:1:8: invalid escape");

    dfx_json *d = parse_ok("[\"\xc3\xa9\", 1]");
    ck_assert_int_eq(dfx_json_column(dfx_json_at(d, 1)), 7);
    dfx_json_destroy(d);

    /* the origin names the source */
    dfx_json *doc = NULL;
    ck_assert_int_eq(dfx_json_parse("[", 1, "configs/unet.json", &doc), DFX_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "configs/unet.json:1:2: "));
    ck_assert_int_eq(dfx_json_parse("[", 1, NULL, &doc), DFX_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "<json>:1:2: "));
}
END_TEST

static char *repeat(const char *open, const char *mid, const char *close, int n)
{
    size_t lo = strlen(open), lm = strlen(mid), lc = strlen(close);
    char *s = malloc((size_t)n * (lo + lc) + lm + 1);
    ck_assert_ptr_nonnull(s);
    char *p = s;
    for (int i = 0; i < n; i++, p += lo)
        memcpy(p, open, lo);
    memcpy(p, mid, lm);
    p += lm;
    for (int i = 0; i < n; i++, p += lc)
        memcpy(p, close, lc);
    *p = '\0';
    return s;
}

START_TEST(test_nesting)
{
    char *s = repeat("[", "1", "]", 256);
    dfx_json *d = parse_ok(s);
    const dfx_json *v = d;
    for (int i = 0; i < 256; i++) {
        ck_assert_int_eq(dfx_json_type_of(v), DFX_JSON_ARRAY);
        v = dfx_json_at(v, 0);
    }
    ck_assert_double_eq(dfx_json_number(v), 1);
    dfx_json_destroy(d);
    free(s);

    s = repeat("{\"a\":", "{}", "}", 255);
    d = parse_ok(s);
    dfx_json_destroy(d);
    free(s);

    s = repeat("[", "1", "]", 257);
    EXPECT_ERROR(s, "t.json:1:257: nesting deeper than 256 levels");
    free(s);

    s = repeat("{\"a\":", "[]", "}", 256);
    EXPECT_ERROR(s, "nesting deeper than 256 levels");
    free(s);

    /* hostile depth fails fast, without recursion */
    s = repeat("[", "", "", 1000000);
    EXPECT_ERROR(s, "nesting deeper than 256 levels");
    free(s);
}
END_TEST

START_TEST(test_large)
{
    /* many values on one line: positions stay linear-time */
    const int n = 200000;
    const size_t cap = (size_t)n * 8 + 16;
    char *s = malloc(cap);
    if (!s) {
        ck_abort_msg("out of memory");
        return;
    }
    size_t len = 0;
    s[len++] = '[';
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(s + len, cap - len, "%s%d", i ? "," : "", i);
    s[len++] = ']';
    s[len] = '\0';
    dfx_json *d = parse_ok(s);
    ck_assert_int_eq(dfx_json_size(d), n);
    int64_t v;
    ck_assert(dfx_json_int(dfx_json_at(d, n - 1), &v));
    ck_assert_int_eq(v, n - 1);
    ck_assert_int_eq(dfx_json_column(dfx_json_at(d, 1)), 4);
    dfx_json_destroy(d);
    free(s);
}
END_TEST

START_TEST(test_length_bound)
{
    /* the text need not be NUL-terminated: only len bytes count */
    const char text[] = "[1,2]garbage";
    dfx_json *d = NULL;
    ck_assert_int_eq(dfx_json_parse(text, 5, "t.json", &d), DFX_OK);
    ck_assert_int_eq(dfx_json_size(d), 2);
    dfx_json_destroy(d);
    ck_assert_int_eq(dfx_json_parse(text, 4, "t.json", &d), DFX_ERR_FORMAT);
    ck_assert_ptr_null(d);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "found end of input"));
    ck_assert_int_eq(dfx_json_parse("\"abc\"", 3, "t.json", &d), DFX_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "unterminated string"));
    ck_assert_int_eq(dfx_json_parse("123", 2, "t.json", &d), DFX_OK);
    ck_assert_double_eq(dfx_json_number(d), 12);
    dfx_json_destroy(d);
    ck_assert_int_eq(dfx_json_parse(NULL, 0, "t.json", &d), DFX_ERR_FORMAT);
    ck_assert_int_eq(dfx_json_parse(NULL, 3, "t.json", &d), DFX_ERR_INVALID_ARG);
}
END_TEST

static char tmpdir[64];

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

START_TEST(test_parse_file)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/dfx_json_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    char path[128];
    snprintf(path, sizeof path, "%s/config.json", tmpdir);
    FILE *fp = fopen(path, "wb");
    ck_assert_ptr_nonnull(fp);
    fputs("{\n  \"steps\": 50,\n  \"eta\": 0.0,\n  \"bad\": [1,\n}\n", fp);
    fclose(fp);

    dfx_json *d = NULL;
    ck_assert_int_eq(dfx_json_parse_file(path, &d), DFX_ERR_FORMAT);
    ck_assert_ptr_null(d);
    char want[300];
    snprintf(want, sizeof want, "%s:5:1: expected a value (object, array, string, number, "
             "true, false or null), found '}'", path);
    ck_assert_str_eq(dfx_error_message(), want);

    fp = fopen(path, "wb");
    fputs("{\"steps\": 50}", fp);
    fclose(fp);
    ck_assert_int_eq(dfx_json_parse_file(path, &d), DFX_OK);
    int64_t steps;
    ck_assert(dfx_json_int(dfx_json_get(d, "steps"), &steps));
    ck_assert_int_eq(steps, 50);
    dfx_json_destroy(d);

    snprintf(path, sizeof path, "%s/missing.json", tmpdir);
    ck_assert_int_eq(dfx_json_parse_file(path, &d), DFX_ERR_NOT_FOUND);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "missing.json: cannot open"));
    nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}
END_TEST

static int fixture_json_count;

static int parse_fixture(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    size_t n = strlen(path);
    if (flag != FTW_F || n < 5 || strcmp(path + n - 5, ".json") != 0)
        return 0;
    dfx_json *d = NULL;
    dfx_status st = dfx_json_parse_file(path, &d);
    ck_assert_msg(st == DFX_OK, "%s", dfx_error_message());
    dfx_json_destroy(d);
    fixture_json_count++;
    return 0;
}

START_TEST(test_fixtures)
{
    const char *dir = test_fixtures_dir();
    if (!dir) {
        fprintf(stderr, "test_json: fixtures folder not found; fixture checks skipped\n");
        return;
    }
    fixture_json_count = 0;
    ck_assert_int_eq(nftw(dir, parse_fixture, 16, FTW_PHYS), 0);
    ck_assert_int_gt(fixture_json_count, 0);

    /* diffusers writes -Infinity (Python's json) */
    /* not test_fixture(): its 4096-byte buffer trips -Wformat-truncation */
    char path[4200];
    snprintf(path, sizeof path, "%s/schedulers/dpmpp_2m_sd/scheduler_config.json", dir);
    if (access(path, R_OK) == 0) {
        dfx_json *d = NULL;
        ck_assert_int_eq(dfx_json_parse_file(path, &d), DFX_OK);
        double v = dfx_json_number(dfx_json_get(d, "lambda_min_clipped"));
        ck_assert(isinf(v) && v < 0);
        ck_assert_str_eq(dfx_json_string(dfx_json_get(d, "_class_name")),
                         "DPMSolverMultistepScheduler");
        dfx_json_destroy(d);
    }
}
END_TEST

static Suite *json_suite(void)
{
    Suite *s = suite_create("json");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_scalars);
    tcase_add_test(tc, test_containers);
    tcase_add_test(tc, test_python_specials);
    tcase_add_test(tc, test_numbers);
    tcase_add_test(tc, test_number_errors);
    tcase_add_test(tc, test_strings);
    tcase_add_test(tc, test_string_errors);
    tcase_add_test(tc, test_structure_errors);
    tcase_add_test(tc, test_positions);
    tcase_add_test(tc, test_nesting);
    tcase_add_test(tc, test_large);
    tcase_add_test(tc, test_length_bound);
    tcase_add_test(tc, test_parse_file);
    tcase_add_test(tc, test_fixtures);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run_suite(json_suite());
}
