/* A restricted unpickler: the pickle virtual machine of protocols 0-5
 * (opcodes as documented in CPython's Lib/pickletools.py, semantics as in
 * Lib/pickle.py's _Unpickler) building an inert tree of dfx__pk nodes.
 * Globals resolve only to an allow-list of tensor-rebuild and container
 * names; anything else is refused at the opcode that names it, and nothing
 * is ever called: a REDUCE of an allowed global is recorded, not run. */
#include <locale.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/utf8.h"
#include "core/internal.h"

/* Open MARKs at once. Pickles nest a MARK per container being filled; a
 * state dict needs a handful. */
#define MAX_MARKS 4096
/* Names in messages are cut to this many bytes. */
#define NAME_SHOWN 96
#define ARENA_BLOCK ((size_t)64 << 10)

/* Opcodes, named as in pickletools. */
enum {
    OP_MARK = '(', OP_STOP = '.', OP_POP = '0', OP_POP_MARK = '1', OP_DUP = '2',
    OP_FLOAT = 'F', OP_INT = 'I', OP_BININT = 'J', OP_BININT1 = 'K', OP_LONG = 'L',
    OP_BININT2 = 'M', OP_NONE = 'N', OP_PERSID = 'P', OP_BINPERSID = 'Q', OP_REDUCE = 'R',
    OP_STRING = 'S', OP_BINSTRING = 'T', OP_SHORT_BINSTRING = 'U', OP_UNICODE = 'V',
    OP_BINUNICODE = 'X', OP_APPEND = 'a', OP_BUILD = 'b', OP_GLOBAL = 'c', OP_DICT = 'd',
    OP_EMPTY_DICT = '}', OP_APPENDS = 'e', OP_GET = 'g', OP_BINGET = 'h', OP_INST = 'i',
    OP_LONG_BINGET = 'j', OP_LIST = 'l', OP_EMPTY_LIST = ']', OP_OBJ = 'o', OP_PUT = 'p',
    OP_BINPUT = 'q', OP_LONG_BINPUT = 'r', OP_SETITEM = 's', OP_TUPLE = 't',
    OP_EMPTY_TUPLE = ')', OP_SETITEMS = 'u', OP_BINFLOAT = 'G',
    /* protocol 2 */
    OP_PROTO = 0x80, OP_NEWOBJ = 0x81, OP_EXT1 = 0x82, OP_EXT2 = 0x83, OP_EXT4 = 0x84,
    OP_TUPLE1 = 0x85, OP_TUPLE2 = 0x86, OP_TUPLE3 = 0x87, OP_NEWTRUE = 0x88,
    OP_NEWFALSE = 0x89, OP_LONG1 = 0x8a, OP_LONG4 = 0x8b,
    /* protocol 3 */
    OP_BINBYTES = 'B', OP_SHORT_BINBYTES = 'C',
    /* protocol 4 */
    OP_SHORT_BINUNICODE = 0x8c, OP_BINUNICODE8 = 0x8d, OP_BINBYTES8 = 0x8e,
    OP_EMPTY_SET = 0x8f, OP_ADDITEMS = 0x90, OP_FROZENSET = 0x91, OP_NEWOBJ_EX = 0x92,
    OP_STACK_GLOBAL = 0x93, OP_MEMOIZE = 0x94, OP_FRAME = 0x95,
    /* protocol 5 */
    OP_BYTEARRAY8 = 0x96, OP_NEXT_BUFFER = 0x97, OP_READONLY_BUFFER = 0x98,
};

/* The allow-list: exactly what torch.save writes for tensors (torch/_utils.py
 * rebuild functions, the typed storage classes named in persistent ids) and
 * plain containers, plus the objects Lightning checkpoints carry beside the
 * weights (callback state, numpy scalars and their dtypes, protocol 2's
 * _codecs.encode for bytes), kept as inert placeholders. builtins.set is
 * how protocols 0-3 write a set (pickle.py save_set), under its Python 2
 * module name __builtin__ as well. */
static const struct allowed {
    const char *module, *name;
    dfx__pk_global global;
    dfx_dtype dtype;
} allowed[] = {
    {"torch._utils", "_rebuild_tensor", DFX__PKG_REBUILD_TENSOR, DFX_DTYPE_F32},
    {"torch._utils", "_rebuild_tensor_v2", DFX__PKG_REBUILD_TENSOR_V2, DFX_DTYPE_F32},
    {"torch._utils", "_rebuild_parameter", DFX__PKG_REBUILD_PARAMETER, DFX_DTYPE_F32},
    {"torch._utils", "_rebuild_parameter_with_state", DFX__PKG_REBUILD_PARAMETER_WITH_STATE,
     DFX_DTYPE_F32},
    {"torch", "FloatStorage", DFX__PKG_STORAGE, DFX_DTYPE_F32},
    {"torch", "HalfStorage", DFX__PKG_STORAGE, DFX_DTYPE_F16},
    {"torch", "BFloat16Storage", DFX__PKG_STORAGE, DFX_DTYPE_BF16},
    {"torch", "DoubleStorage", DFX__PKG_STORAGE, DFX_DTYPE_F64},
    {"torch", "LongStorage", DFX__PKG_STORAGE, DFX_DTYPE_I64},
    {"torch", "IntStorage", DFX__PKG_STORAGE, DFX_DTYPE_I32},
    {"torch", "ShortStorage", DFX__PKG_STORAGE, DFX_DTYPE_I16},
    {"torch", "CharStorage", DFX__PKG_STORAGE, DFX_DTYPE_I8},
    {"torch", "ByteStorage", DFX__PKG_STORAGE, DFX_DTYPE_U8},
    {"torch", "BoolStorage", DFX__PKG_STORAGE, DFX_DTYPE_BOOL},
    {"collections", "OrderedDict", DFX__PKG_ORDERED_DICT, DFX_DTYPE_F32},
    {"torch", "Size", DFX__PKG_SIZE, DFX_DTYPE_F32},
    {"builtins", "set", DFX__PKG_SET, DFX_DTYPE_F32},
    {"__builtin__", "set", DFX__PKG_SET, DFX_DTYPE_F32},
    {"builtins", "frozenset", DFX__PKG_FROZENSET, DFX_DTYPE_F32},
    {"__builtin__", "frozenset", DFX__PKG_FROZENSET, DFX_DTYPE_F32},
    {"pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint", DFX__PKG_INERT,
     DFX_DTYPE_F32},
    {"pytorch_lightning.callbacks", "model_checkpoint", DFX__PKG_INERT, DFX_DTYPE_F32},
    {"numpy.core.multiarray", "scalar", DFX__PKG_INERT, DFX_DTYPE_F32},
    {"numpy.core.multiarray", "_reconstruct", DFX__PKG_INERT, DFX_DTYPE_F32},
    {"numpy._core.multiarray", "scalar", DFX__PKG_INERT, DFX_DTYPE_F32},
    {"numpy._core.multiarray", "_reconstruct", DFX__PKG_INERT, DFX_DTYPE_F32},
    {"numpy", "dtype", DFX__PKG_INERT, DFX_DTYPE_F32},
    {"numpy", "ndarray", DFX__PKG_INERT, DFX_DTYPE_F32},
    {"_codecs", "encode", DFX__PKG_INERT, DFX_DTYPE_F32},
};

typedef struct arena_block {
    struct arena_block *next;
    size_t used, size;
    max_align_t data[];
} arena_block;

struct dfx__pickle {
    arena_block *arena;
    dfx__pk *root;
    dfx__pk **persids;
    int64_t npersids;
};

typedef struct vm {
    const char *file;
    const unsigned char *begin, *p, *end;
    const unsigned char *frame_end;   /* the current FRAME's end, or NULL */
    size_t op_at;
    unsigned char op;
    dfx__pickle *out;
    size_t allocated;                 /* against DFX__PICKLE_MAX_BYTES */
    dfx__pk **stack;
    int64_t sp, stack_cap;
    int64_t marks[MAX_MARKS];
    int nmarks;
    dfx__pk **memo;
    uint64_t memo_cap, memo_len;    /* memo_len: entries set, MEMOIZE's next index */
    int64_t persid_cap;
    dfx__pk *none, *yes, *no;
    locale_t c_locale;
} vm;

static const char *op_name(unsigned char op)
{
    switch (op) {
    case OP_MARK: return "MARK";
    case OP_STOP: return "STOP";
    case OP_POP: return "POP";
    case OP_POP_MARK: return "POP_MARK";
    case OP_DUP: return "DUP";
    case OP_FLOAT: return "FLOAT";
    case OP_INT: return "INT";
    case OP_BININT: return "BININT";
    case OP_BININT1: return "BININT1";
    case OP_LONG: return "LONG";
    case OP_BININT2: return "BININT2";
    case OP_NONE: return "NONE";
    case OP_PERSID: return "PERSID";
    case OP_BINPERSID: return "BINPERSID";
    case OP_REDUCE: return "REDUCE";
    case OP_STRING: return "STRING";
    case OP_BINSTRING: return "BINSTRING";
    case OP_SHORT_BINSTRING: return "SHORT_BINSTRING";
    case OP_UNICODE: return "UNICODE";
    case OP_BINUNICODE: return "BINUNICODE";
    case OP_APPEND: return "APPEND";
    case OP_BUILD: return "BUILD";
    case OP_GLOBAL: return "GLOBAL";
    case OP_DICT: return "DICT";
    case OP_EMPTY_DICT: return "EMPTY_DICT";
    case OP_APPENDS: return "APPENDS";
    case OP_GET: return "GET";
    case OP_BINGET: return "BINGET";
    case OP_INST: return "INST";
    case OP_LONG_BINGET: return "LONG_BINGET";
    case OP_LIST: return "LIST";
    case OP_EMPTY_LIST: return "EMPTY_LIST";
    case OP_OBJ: return "OBJ";
    case OP_PUT: return "PUT";
    case OP_BINPUT: return "BINPUT";
    case OP_LONG_BINPUT: return "LONG_BINPUT";
    case OP_SETITEM: return "SETITEM";
    case OP_TUPLE: return "TUPLE";
    case OP_EMPTY_TUPLE: return "EMPTY_TUPLE";
    case OP_SETITEMS: return "SETITEMS";
    case OP_BINFLOAT: return "BINFLOAT";
    case OP_PROTO: return "PROTO";
    case OP_NEWOBJ: return "NEWOBJ";
    case OP_EXT1: return "EXT1";
    case OP_EXT2: return "EXT2";
    case OP_EXT4: return "EXT4";
    case OP_TUPLE1: return "TUPLE1";
    case OP_TUPLE2: return "TUPLE2";
    case OP_TUPLE3: return "TUPLE3";
    case OP_NEWTRUE: return "NEWTRUE";
    case OP_NEWFALSE: return "NEWFALSE";
    case OP_LONG1: return "LONG1";
    case OP_LONG4: return "LONG4";
    case OP_BINBYTES: return "BINBYTES";
    case OP_SHORT_BINBYTES: return "SHORT_BINBYTES";
    case OP_SHORT_BINUNICODE: return "SHORT_BINUNICODE";
    case OP_BINUNICODE8: return "BINUNICODE8";
    case OP_BINBYTES8: return "BINBYTES8";
    case OP_EMPTY_SET: return "EMPTY_SET";
    case OP_ADDITEMS: return "ADDITEMS";
    case OP_FROZENSET: return "FROZENSET";
    case OP_NEWOBJ_EX: return "NEWOBJ_EX";
    case OP_STACK_GLOBAL: return "STACK_GLOBAL";
    case OP_MEMOIZE: return "MEMOIZE";
    case OP_FRAME: return "FRAME";
    case OP_BYTEARRAY8: return "BYTEARRAY8";
    case OP_NEXT_BUFFER: return "NEXT_BUFFER";
    case OP_READONLY_BUFFER: return "READONLY_BUFFER";
    }
    return NULL;
}

const char *dfx__pk_type_name(const dfx__pk *v)
{
    if (!v)
        return "nothing";
    switch (v->type) {
    case DFX__PK_NONE: return "None";
    case DFX__PK_BOOL: return "a bool";
    case DFX__PK_INT: return "an int";
    case DFX__PK_BIGINT: return "an int beyond 64 bits";
    case DFX__PK_FLOAT: return "a float";
    case DFX__PK_STR: return "a str";
    case DFX__PK_BYTES: return "bytes";
    case DFX__PK_TUPLE: return "a tuple";
    case DFX__PK_LIST: return "a list";
    case DFX__PK_DICT: return "a dict";
    case DFX__PK_SET: return "a set";
    case DFX__PK_FROZENSET: return "a frozenset";
    case DFX__PK_GLOBAL: return "a global";
    case DFX__PK_CALL: return "an object";
    case DFX__PK_PERSID: return "a persistent id";
    }
    return "?";
}

/* An error at the current opcode: "FILE: pickle byte N (OPNAME): what". */
static dfx_status fail(vm *m, dfx_status status, const char *fmt, ...) DFX_PRINTF(3, 4);

static dfx_status fail(vm *m, dfx_status status, const char *fmt, ...)
{
    char what[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    const char *name = op_name(m->op);
    char opbuf[32];
    if (!name) {
        snprintf(opbuf, sizeof opbuf, "opcode 0x%02x", m->op);
        name = opbuf;
    }
    return dfx_error_set(status, "%s: pickle byte %zu (%s): %s", m->file, m->op_at, name, what);
}

static dfx_status too_big(vm *m)
{
    return fail(m, DFX_ERR_FORMAT, "unpickling would take more than %d MiB (hostile input, "
                "or not a checkpoint)", DFX__PICKLE_MAX_BYTES >> 20);
}

/* Counts `size` bytes against the bound; false when it would pass it. */
static bool charge(vm *m, size_t size)
{
    if (size > (size_t)DFX__PICKLE_MAX_BYTES - m->allocated)
        return false;
    m->allocated += size;
    return true;
}

static void *arena_alloc(vm *m, size_t size)
{
    const size_t align = sizeof(max_align_t);
    size = (size + align - 1) / align * align;
    arena_block *b = m->out->arena;
    if (!b || b->size - b->used < size) {
        size_t bsize = size > ARENA_BLOCK ? size : ARENA_BLOCK;
        if (!charge(m, bsize + sizeof *b))
            return NULL;
        b = malloc(sizeof *b + bsize);
        if (!b)
            return NULL;
        b->size = bsize;
        b->used = 0;
        /* a large block goes behind the current one, which keeps its room */
        if (m->out->arena && bsize > ARENA_BLOCK) {
            b->next = m->out->arena->next;
            m->out->arena->next = b;
        } else {
            b->next = m->out->arena;
            m->out->arena = b;
        }
    }
    void *p = (unsigned char *)b->data + b->used;
    b->used += size;
    return p;
}

static dfx_status no_memory(vm *m)
{
    if (m->allocated + ARENA_BLOCK > (size_t)DFX__PICKLE_MAX_BYTES)
        return too_big(m);
    return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory unpickling", m->file);
}

static dfx__pk *node(vm *m, dfx__pk_type type)
{
    dfx__pk *v = arena_alloc(m, sizeof *v);
    if (v) {
        memset(v, 0, sizeof *v);
        v->type = type;
    }
    return v;
}

/* Appends to a node's items, doubling its array inside the arena. */
static bool add_item(vm *m, dfx__pk *c, dfx__pk *item)
{
    if (c->n == c->cap) {
        int64_t cap = c->cap ? 2 * c->cap : 4;
        if ((uint64_t)cap > SIZE_MAX / sizeof *c->items)
            return false;
        dfx__pk **items = arena_alloc(m, (size_t)cap * sizeof *items);
        if (!items)
            return false;
        if (c->n)
            memcpy(items, c->items, (size_t)c->n * sizeof *items);
        c->items = items;
        c->cap = cap;
    }
    c->items[c->n++] = item;
    return true;
}

/* A node of `type` holding a copy of items[0..n). */
static dfx__pk *node_items(vm *m, dfx__pk_type type, dfx__pk *const *items, int64_t n)
{
    dfx__pk *v = node(m, type);
    if (!v)
        return NULL;
    if (n) {
        v->items = arena_alloc(m, (size_t)n * sizeof *v->items);
        if (!v->items)
            return NULL;
        memcpy(v->items, items, (size_t)n * sizeof *v->items);
    }
    v->n = v->cap = n;
    return v;
}

/* A NUL-terminated copy of s[0..len) in the arena. */
static char *copy_str(vm *m, const void *s, size_t len)
{
    if (len == SIZE_MAX)
        return NULL;
    char *c = arena_alloc(m, len + 1);
    if (c) {
        if (len)
            memcpy(c, s, len);
        c[len] = '\0';
    }
    return c;
}

/* ---- reading the input ---------------------------------------------- */

/* Takes n bytes. Inside a FRAME the bytes must lie inside it: pickle.py's
 * _Unframer refuses an opcode that straddles a frame's end. */
static dfx_status take(vm *m, size_t n, const unsigned char **out)
{
    *out = m->p;
    if (m->frame_end && m->p == m->frame_end)
        m->frame_end = NULL;
    const unsigned char *limit = m->frame_end ? m->frame_end : m->end;
    if (n > (size_t)(limit - m->p)) {
        if (m->frame_end)
            return fail(m, DFX_ERR_FORMAT, "the opcode runs past the end of its frame");
        return fail(m, DFX_ERR_FORMAT, "the pickle ends in the middle of an opcode "
                    "(truncated file?)");
    }
    *out = m->p;
    m->p += n;
    return DFX_OK;
}

/* A text argument up to its newline (which is consumed, not returned). */
static dfx_status read_line(vm *m, const char **s, size_t *len)
{
    *s = (const char *)m->p;
    *len = 0;
    if (m->frame_end && m->p == m->frame_end)
        m->frame_end = NULL;
    const unsigned char *limit = m->frame_end ? m->frame_end : m->end;
    const unsigned char *nl = memchr(m->p, '\n', (size_t)(limit - m->p));
    if (!nl)
        return fail(m, DFX_ERR_FORMAT, "a text argument without its closing newline");
    *s = (const char *)m->p;
    *len = (size_t)(nl - m->p);
    m->p = nl + 1;
    return DFX_OK;
}

static uint64_t le(const unsigned char *b, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | b[i];
    return v;
}

static dfx_status read_uint(vm *m, int n, uint64_t *out)
{
    const unsigned char *b;
    dfx_status st = take(m, (size_t)n, &b);
    *out = st ? 0 : le(b, n);
    return st;
}

/* ---- text ------------------------------------------------------------ */

/* Valid UTF-8 as Python's utf-8 codec with "surrogatepass" (pickle.py's
 * decoding of BINUNICODE) accepts it: no overlong forms, nothing past
 * U+10FFFF, encoded surrogates allowed. */
static bool utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t len;
        uint32_t v, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            len = 2, v = c & 0x1fu, min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3, v = c & 0x0fu, min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4, v = c & 0x07u, min = 0x10000;
        } else {
            return false;
        }
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0u) != 0x80u)
                return false;
            v = (v << 6) | (s[i + k] & 0x3fu);
        }
        if (v < min || v > 0x10ffff)
            return false;
        i += len;
    }
    return true;
}

static int hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Pushes a str node of UTF-8 text s[0..len). */
static dfx_status push(vm *m, dfx__pk *v);

static dfx_status push_str(vm *m, dfx__pk_type type, const void *s, size_t len)
{
    if (type == DFX__PK_STR && !utf8_valid(s, len))
        return fail(m, DFX_ERR_FORMAT, "a string that is not valid UTF-8");
    dfx__pk *v = node(m, type);
    if (!v || !(v->s = copy_str(m, s, len)))
        return no_memory(m);
    v->len = len;
    return push(m, v);
}

/* STRING's argument: a Python 2 repr, quoted, with the escapes of
 * codecs.escape_decode; the bytes are then UTF-8 (torch.load's encoding). */
static dfx_status push_string_repr(vm *m, const char *s, size_t len)
{
    if (len < 2 || (s[0] != '\'' && s[0] != '"') || s[len - 1] != s[0])
        return fail(m, DFX_ERR_FORMAT, "the STRING argument must be quoted");
    s++;
    len -= 2;
    char *buf = arena_alloc(m, len + 1);
    if (!buf)
        return no_memory(m);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c != '\\') {
            buf[n++] = (char)c;
            continue;
        }
        if (++i == len)
            return fail(m, DFX_ERR_FORMAT, "a STRING argument ending in a lone backslash");
        c = (unsigned char)s[i];
        switch (c) {
        case '\n': break;
        case '\\': case '\'': case '"': buf[n++] = (char)c; break;
        case 'a': buf[n++] = '\a'; break;
        case 'b': buf[n++] = '\b'; break;
        case 'f': buf[n++] = '\f'; break;
        case 'n': buf[n++] = '\n'; break;
        case 'r': buf[n++] = '\r'; break;
        case 't': buf[n++] = '\t'; break;
        case 'v': buf[n++] = '\v'; break;
        case 'x': {
            int h1 = i + 1 < len ? hex_digit((unsigned char)s[i + 1]) : -1;
            int h2 = i + 2 < len ? hex_digit((unsigned char)s[i + 2]) : -1;
            if (h1 < 0 || h2 < 0)
                return fail(m, DFX_ERR_FORMAT, "an invalid \\x escape in a STRING argument");
            buf[n++] = (char)(h1 * 16 + h2);
            i += 2;
            break;
        }
        default:
            if (c >= '0' && c <= '7') {
                int v = c - '0';
                for (int k = 0; k < 2 && i + 1 < len && s[i + 1] >= '0' && s[i + 1] <= '7'; k++)
                    v = v * 8 + (s[++i] - '0');
                buf[n++] = (char)(v & 0xff);
            } else {
                /* escape_decode keeps an unknown escape as it is */
                buf[n++] = '\\';
                buf[n++] = (char)c;
            }
        }
    }
    return push_str(m, DFX__PK_STR, buf, n);
}

/* UNICODE's argument: raw-unicode-escape, where only \uXXXX and \UXXXXXXXX
 * are escapes and every other byte is a Latin-1 character. */
static dfx_status push_raw_unicode(vm *m, const char *s, size_t len)
{
    if (len > (SIZE_MAX - 1) / 2)
        return too_big(m);
    char *buf = arena_alloc(m, 2 * len + 1);
    if (!buf)
        return no_memory(m);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        int digits = 0;
        if (c == '\\' && i + 1 < len)
            digits = s[i + 1] == 'u' ? 4 : s[i + 1] == 'U' ? 8 : 0;
        if (!digits) {
            n += dfx__utf8_put(c, (unsigned char *)buf + n);
            continue;
        }
        uint32_t cp = 0;
        for (int k = 0; k < digits; k++) {
            int h = i + 2 + (size_t)k < len ? hex_digit((unsigned char)s[i + 2 + (size_t)k]) : -1;
            if (h < 0)
                return fail(m, DFX_ERR_FORMAT, "a truncated \\%c escape in a UNICODE argument",
                            digits == 4 ? 'u' : 'U');
            cp = cp * 16 + (uint32_t)h;
        }
        if (cp > 0x10ffff)
            return fail(m, DFX_ERR_FORMAT, "\\U%08x is beyond U+10FFFF", (unsigned)cp);
        /* a \U escape takes 10 bytes, at most 4 out: within 2 * len */
        n += dfx__utf8_put(cp, (unsigned char *)buf + n);
        i += 1 + (size_t)digits;
    }
    return push_str(m, DFX__PK_STR, buf, n);
}

/* A decimal integer of INT, PUT and GET: an optional sign and digits. */
static dfx_status parse_decimal(vm *m, const char *s, size_t len, int64_t *out)
{
    size_t i = 0;
    bool neg = false;
    if (i < len && (s[i] == '-' || s[i] == '+'))
        neg = s[i++] == '-';
    if (i == len)
        return fail(m, DFX_ERR_FORMAT, "an integer argument without digits");
    uint64_t v = 0;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return fail(m, DFX_ERR_FORMAT, "an integer argument with a character other than "
                        "a digit");
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10 || v * 10 + d > (uint64_t)INT64_MAX + neg)
            return fail(m, DFX_ERR_UNSUPPORTED, "an integer beyond 64 bits");
        v = v * 10 + d;
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return DFX_OK;
}

/* ---- the stack, marks and memo ---------------------------------------- */

static dfx_status push(vm *m, dfx__pk *v)
{
    if (!v)
        return no_memory(m);
    if (m->sp == m->stack_cap) {
        int64_t cap = m->stack_cap ? 2 * m->stack_cap : 64;
        if (!charge(m, (size_t)(cap - m->stack_cap) * sizeof *m->stack))
            return too_big(m);
        dfx__pk **s = realloc(m->stack, (size_t)cap * sizeof *s);
        if (!s)
            return no_memory(m);
        m->stack = s;
        m->stack_cap = cap;
    }
    m->stack[m->sp++] = v;
    return DFX_OK;
}

/* Items above the topmost MARK: pickle.py's stack is a fresh list after
 * each MARK, so nothing below it is visible. */
static int64_t visible(const vm *m)
{
    return m->nmarks ? m->sp - m->marks[m->nmarks - 1] : m->sp;
}

static dfx_status pop(vm *m, dfx__pk **out)
{
    *out = m->none;
    if (visible(m) < 1)
        return fail(m, DFX_ERR_FORMAT, "the stack is empty");
    *out = m->stack[--m->sp];
    return DFX_OK;
}

static dfx_status top(vm *m, dfx__pk **out)
{
    *out = m->none;
    if (visible(m) < 1)
        return fail(m, DFX_ERR_FORMAT, "the stack is empty");
    *out = m->stack[m->sp - 1];
    return DFX_OK;
}

/* Pops the items above the topmost MARK and the MARK: *items points at
 * them (valid until the next push), *n counts them. */
static dfx_status pop_mark(vm *m, dfx__pk ***items, int64_t *n)
{
    *items = m->stack;
    *n = 0;
    if (!m->nmarks)
        return fail(m, DFX_ERR_FORMAT, "no MARK to pop to");
    int64_t at = m->marks[--m->nmarks];
    if (m->stack) /* no stack yet when nothing was ever pushed */
        *items = m->stack + at;
    *n = m->sp - at;
    m->sp = at;
    return DFX_OK;
}

/* The memo is an array indexed by memo key. pickle.py's Pickler numbers its
 * memo entries in order (len(memo)), one opcode each, so an index is never
 * larger than the bytes before it; a larger one is refused, which bounds the
 * array by the input read so far. */
static dfx_status memo_put(vm *m, uint64_t key, dfx__pk *v)
{
    if (key > m->op_at)
        return fail(m, DFX_ERR_FORMAT, "memo index %llu is larger than the pickle before it "
                    "(%zu bytes) can have numbered", (unsigned long long)key, m->op_at);
    if (key >= m->memo_cap) {
        uint64_t cap = m->memo_cap ? 2 * m->memo_cap : 64;
        while (cap <= key)
            cap *= 2;
        if (!charge(m, (size_t)(cap - m->memo_cap) * sizeof *m->memo))
            return too_big(m);
        dfx__pk **memo = realloc(m->memo, (size_t)cap * sizeof *memo);
        if (!memo)
            return no_memory(m);
        memset(memo + m->memo_cap, 0, (size_t)(cap - m->memo_cap) * sizeof *memo);
        m->memo = memo;
        m->memo_cap = cap;
    }
    if (!m->memo[key])
        m->memo_len++;
    m->memo[key] = v;
    return DFX_OK;
}

static dfx_status memo_get(vm *m, uint64_t key)
{
    if (key < m->memo_cap && m->memo[key])
        return push(m, m->memo[key]);
    return fail(m, DFX_ERR_FORMAT, "memo entry %llu is read before it is written",
                (unsigned long long)key);
}

static dfx_status put_top(vm *m, uint64_t key)
{
    dfx__pk *v;
    dfx_status st = top(m, &v);
    return st ? st : memo_put(m, key, v);
}

/* ---- globals ---------------------------------------------------------- */

/* module.name for a message: control bytes escaped, cut after NAME_SHOWN
 * bytes at a character boundary. */
static void name_for_message(const char *module, size_t mlen, const char *name, size_t nlen,
                             char *buf, size_t size, size_t *total)
{
    size_t n = 0;
    *total = mlen + 1 + nlen;
    for (size_t i = 0; i < *total && n + 5 < size; i++) {
        unsigned char c = (unsigned char)(i < mlen ? module[i] : i == mlen ? '.' : name[i - mlen - 1]);
        if (i >= NAME_SHOWN && (c & 0xc0u) != 0x80u) {
            n += (size_t)snprintf(buf + n, size - n, "...");
            break;
        }
        if (c == '\n')
            n += (size_t)snprintf(buf + n, size - n, "\\n");
        else if (c < 0x20 || c == 0x7f || c == '\'')
            n += (size_t)snprintf(buf + n, size - n, "\\x%02x", c);
        else
            buf[n++] = (char)c;
    }
    buf[n] = '\0';
}

/* Resolves module.name against the allow-list, or refuses it. */
static dfx_status push_global(vm *m, const char *module, size_t mlen, const char *name,
                              size_t nlen)
{
    for (size_t i = 0; i < sizeof allowed / sizeof *allowed; i++) {
        const struct allowed *a = &allowed[i];
        if (strlen(a->module) != mlen || strlen(a->name) != nlen ||
            memcmp(a->module, module, mlen) != 0 || memcmp(a->name, name, nlen) != 0)
            continue;
        dfx__pk *v = node(m, DFX__PK_GLOBAL);
        if (!v)
            return no_memory(m);
        v->global = a->global;
        v->dtype = a->dtype;
        char full[256];
        v->len = (size_t)snprintf(full, sizeof full, "%s.%s", a->module, a->name);
        if (!(v->s = copy_str(m, full, v->len)))
            return no_memory(m);
        return push(m, v);
    }
    char shown[4 * NAME_SHOWN + 16];
    size_t total;
    name_for_message(module, mlen, name, nlen, shown, sizeof shown, &total);
    if (total > NAME_SHOWN)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: refuses to unpickle global '%s' (a name of %zu "
                             "bytes; only tensor data and plain containers are read)", m->file,
                             shown, total);
    return dfx_error_set(DFX_ERR_FORMAT, "%s: refuses to unpickle global '%s' (only tensor data "
                         "and plain containers are read)", m->file, shown);
}

/* GLOBAL and INST: "module\nname\n", UTF-8 in protocol 3's pickle.py. */
static dfx_status read_global(vm *m)
{
    const char *module, *name;
    size_t mlen, nlen;
    dfx_status st = read_line(m, &module, &mlen);
    if (!st)
        st = read_line(m, &name, &nlen);
    if (st)
        return st;
    return push_global(m, module, mlen, name, nlen);
}

/* Applies callable (a GLOBAL node) to args (a tuple) and kwargs (a dict or
 * NULL), recording the call. Nothing runs: container factories give the
 * container pickle.py's would have built, everything else a CALL node. */
static dfx_status apply(vm *m, dfx__pk *callable, dfx__pk *args, dfx__pk *kwargs)
{
    if (callable->type != DFX__PK_GLOBAL)
        return fail(m, DFX_ERR_FORMAT, "calls %s, not an allowed global",
                    dfx__pk_type_name(callable));
    if (args->type != DFX__PK_TUPLE)
        return fail(m, DFX_ERR_FORMAT, "the arguments of '%s' are %s, expected a tuple",
                    callable->s, dfx__pk_type_name(args));
    if (kwargs && kwargs->type != DFX__PK_DICT)
        return fail(m, DFX_ERR_FORMAT, "the keyword arguments of '%s' are %s, expected a dict",
                    callable->s, dfx__pk_type_name(kwargs));
    bool no_kwargs = !kwargs || kwargs->n == 0;
    switch (callable->global) {
    case DFX__PKG_ORDERED_DICT:
        /* OrderedDict.__reduce__ passes no arguments; SETITEMS fills it */
        if (args->n || !no_kwargs)
            return fail(m, DFX_ERR_UNSUPPORTED, "'%s' called with arguments (only the empty "
                        "dict pickle writes is read)", callable->s);
        return push(m, node(m, DFX__PK_DICT));
    case DFX__PKG_SIZE:
        if (args->n != 1 || args->items[0]->type != DFX__PK_TUPLE || !no_kwargs)
            return fail(m, DFX_ERR_FORMAT, "'%s' takes one tuple", callable->s);
        return push(m, args->items[0]);
    case DFX__PKG_SET:
    case DFX__PKG_FROZENSET: {
        dfx__pk_type type = callable->global == DFX__PKG_SET ? DFX__PK_SET : DFX__PK_FROZENSET;
        if (args->n == 0 && no_kwargs)
            return push(m, node(m, type));
        const dfx__pk *from = args->n == 1 ? args->items[0] : NULL;
        if (!from || !no_kwargs ||
            (from->type != DFX__PK_LIST && from->type != DFX__PK_TUPLE &&
             from->type != DFX__PK_SET && from->type != DFX__PK_FROZENSET))
            return fail(m, DFX_ERR_UNSUPPORTED, "'%s' takes one list, tuple or set here",
                        callable->s);
        return push(m, node_items(m, type, from->items, from->n));
    }
    default:
        break;
    }
    dfx__pk *v = node(m, DFX__PK_CALL);
    if (!v)
        return no_memory(m);
    v->global = callable->global;
    v->dtype = callable->dtype;
    v->s = callable->s;
    v->len = callable->len;
    v->arg = args;
    v->kwargs = kwargs;
    return push(m, v);
}

/* ---- the machine ------------------------------------------------------ */

static dfx_status step_containers(vm *m, unsigned char op)
{
    dfx__pk **items, *v, *c;
    int64_t n;
    dfx_status st;
    switch (op) {
    case OP_EMPTY_TUPLE:
        return push(m, node(m, DFX__PK_TUPLE));
    case OP_TUPLE1:
    case OP_TUPLE2:
    case OP_TUPLE3:
        n = op - OP_TUPLE1 + 1;
        if (visible(m) < n)
            return fail(m, DFX_ERR_FORMAT, "the stack holds fewer than %lld items", (long long)n);
        v = node_items(m, DFX__PK_TUPLE, m->stack + m->sp - n, n);
        m->sp -= n;
        return push(m, v);
    case OP_TUPLE:
    case OP_LIST:
    case OP_FROZENSET:
        if ((st = pop_mark(m, &items, &n)))
            return st;
        return push(m, node_items(m, op == OP_TUPLE ? DFX__PK_TUPLE : op == OP_LIST ? DFX__PK_LIST
                                                                     : DFX__PK_FROZENSET,
                                  items, n));
    case OP_EMPTY_LIST:
        return push(m, node(m, DFX__PK_LIST));
    case OP_EMPTY_DICT:
        return push(m, node(m, DFX__PK_DICT));
    case OP_EMPTY_SET:
        return push(m, node(m, DFX__PK_SET));
    case OP_DICT:
        if ((st = pop_mark(m, &items, &n)))
            return st;
        if (n % 2)
            return fail(m, DFX_ERR_FORMAT, "an odd number of items (%lld) for key-value pairs",
                        (long long)n);
        return push(m, node_items(m, DFX__PK_DICT, items, n));
    case OP_APPEND:
        if ((st = pop(m, &v)) || (st = top(m, &c)))
            return st;
        if (c->type != DFX__PK_LIST)
            return fail(m, DFX_ERR_FORMAT, "appends to %s, not a list", dfx__pk_type_name(c));
        return add_item(m, c, v) ? DFX_OK : no_memory(m);
    case OP_APPENDS:
    case OP_SETITEMS:
    case OP_ADDITEMS: {
        if ((st = pop_mark(m, &items, &n)) || (st = top(m, &c)))
            return st;
        dfx__pk_type want = op == OP_APPENDS ? DFX__PK_LIST : op == OP_SETITEMS ? DFX__PK_DICT
                                                                                : DFX__PK_SET;
        if (c->type != want)
            return fail(m, DFX_ERR_FORMAT, "adds items to %s, expected %s",
                        dfx__pk_type_name(c), want == DFX__PK_LIST ? "a list"
                                              : want == DFX__PK_DICT ? "a dict" : "a set");
        if (op == OP_SETITEMS && n % 2)
            return fail(m, DFX_ERR_FORMAT, "an odd number of items (%lld) for key-value pairs",
                        (long long)n);
        /* the items stay in the stack's array above sp until the next push */
        for (int64_t i = 0; i < n; i++)
            if (!add_item(m, c, items[i]))
                return no_memory(m);
        return DFX_OK;
    }
    case OP_SETITEM: {
        dfx__pk *key, *value;
        if ((st = pop(m, &value)) || (st = pop(m, &key)) || (st = top(m, &c)))
            return st;
        if (c->type != DFX__PK_DICT)
            return fail(m, DFX_ERR_FORMAT, "sets an item of %s, not a dict", dfx__pk_type_name(c));
        return add_item(m, c, key) && add_item(m, c, value) ? DFX_OK : no_memory(m);
    }
    }
    return fail(m, DFX_ERR_FORMAT, "unknown opcode 0x%02x", op);
}

static dfx_status step_calls(vm *m, unsigned char op)
{
    dfx__pk **items, *callable, *args, *kwargs, *v;
    int64_t n;
    dfx_status st;
    switch (op) {
    case OP_GLOBAL:
        return read_global(m);
    case OP_STACK_GLOBAL: {
        dfx__pk *name, *module;
        if ((st = pop(m, &name)) || (st = pop(m, &module)))
            return st;
        if (name->type != DFX__PK_STR || module->type != DFX__PK_STR)
            return fail(m, DFX_ERR_FORMAT, "STACK_GLOBAL takes two str, not %s and %s",
                        dfx__pk_type_name(module), dfx__pk_type_name(name));
        return push_global(m, module->s, module->len, name->s, name->len);
    }
    case OP_INST:
        /* the class is resolved (or refused) before the arguments are used */
        if ((st = read_global(m)) || (st = pop(m, &callable)) || (st = pop_mark(m, &items, &n)))
            return st;
        if (!(args = node_items(m, DFX__PK_TUPLE, items, n)))
            return no_memory(m);
        return apply(m, callable, args, NULL);
    case OP_OBJ:
        if ((st = pop_mark(m, &items, &n)))
            return st;
        if (n < 1)
            return fail(m, DFX_ERR_FORMAT, "OBJ without a class");
        callable = items[0];
        if (!(args = node_items(m, DFX__PK_TUPLE, items + 1, n - 1)))
            return no_memory(m);
        return apply(m, callable, args, NULL);
    case OP_REDUCE:
    case OP_NEWOBJ:
        if ((st = pop(m, &args)) || (st = pop(m, &callable)))
            return st;
        return apply(m, callable, args, NULL);
    case OP_NEWOBJ_EX:
        if ((st = pop(m, &kwargs)) || (st = pop(m, &args)) || (st = pop(m, &callable)))
            return st;
        return apply(m, callable, args, kwargs);
    case OP_BUILD: {
        dfx__pk *state;
        if ((st = pop(m, &state)) || (st = top(m, &v)))
            return st;
        /* pickle.py would call __setstate__ or update __dict__: for an inert
         * object or an OrderedDict's attributes, keeping the state is all */
        if (v->type != DFX__PK_CALL && v->type != DFX__PK_DICT)
            return fail(m, DFX_ERR_FORMAT, "sets the state of %s", dfx__pk_type_name(v));
        v->state = state;
        return DFX_OK;
    }
    case OP_PERSID:
    case OP_BINPERSID: {
        dfx__pk *pid;
        if (op == OP_PERSID) {
            const char *s;
            size_t len;
            if ((st = read_line(m, &s, &len)))
                return st;
            for (size_t i = 0; i < len; i++)
                if ((unsigned char)s[i] >= 0x80)
                    return fail(m, DFX_ERR_FORMAT, "a PERSID argument that is not ASCII");
            if ((st = push_str(m, DFX__PK_STR, s, len)) || (st = pop(m, &pid)))
                return st;
        } else if ((st = pop(m, &pid))) {
            return st;
        }
        if (!(v = node(m, DFX__PK_PERSID)))
            return no_memory(m);
        v->arg = pid;
        dfx__pickle *p = m->out;
        if (p->npersids == m->persid_cap) {
            int64_t cap = m->persid_cap ? 2 * m->persid_cap : 16;
            dfx__pk **ids = arena_alloc(m, (size_t)cap * sizeof *ids);
            if (!ids)
                return no_memory(m);
            if (p->npersids)
                memcpy(ids, p->persids, (size_t)p->npersids * sizeof *ids);
            p->persids = ids;
            m->persid_cap = cap;
        }
        p->persids[p->npersids++] = v;
        return push(m, v);
    }
    case OP_EXT1:
    case OP_EXT2:
    case OP_EXT4:
        return fail(m, DFX_ERR_FORMAT, "refuses extension codes (they name globals through "
                    "copyreg's registry; only tensor data and plain containers are read)");
    case OP_NEXT_BUFFER:
    case OP_READONLY_BUFFER:
        return fail(m, DFX_ERR_UNSUPPORTED, "out-of-band buffers are not supported");
    }
    return step_containers(m, op);
}

static dfx_status push_int(vm *m, int64_t i)
{
    dfx__pk *v = node(m, DFX__PK_INT);
    if (v)
        v->i = i;
    return push(m, v);
}

/* LONG1 and LONG4: little-endian two's complement of n bytes, kept as an
 * int64 when it fits, else as its shortest bytes (pickle.py encode_long's
 * form, whatever the writer padded). */
static dfx_status push_long(vm *m, const unsigned char *b, size_t n)
{
    while (n > 1 && ((b[n - 1] == 0x00 && !(b[n - 2] & 0x80u)) ||
                     (b[n - 1] == 0xff && (b[n - 2] & 0x80u))))
        n--;
    if (n == 0)
        return push_int(m, 0);
    if (n <= 8) {
        uint64_t v = (b[n - 1] & 0x80u) ? UINT64_MAX : 0;
        for (size_t i = n; i-- > 0;)
            v = (v << 8) | b[i];
        int64_t s;
        memcpy(&s, &v, sizeof s);
        return push_int(m, s);
    }
    return push_str(m, DFX__PK_BIGINT, b, n);
}

/* LONG's decimal argument (protocols 0 and 1) as LONG1's bytes. Up to 80
 * digits: the legacy format's magic number has 25, and the conversion is
 * quadratic in the digits. */
static dfx_status push_decimal_long(vm *m, const char *s, size_t len)
{
    if (len && s[len - 1] == 'L')
        len--;
    bool neg = len && s[0] == '-';
    size_t i = len && (s[0] == '-' || s[0] == '+') ? 1 : 0;
    if (i == len || len - i > 80)
        return fail(m, len == i ? DFX_ERR_FORMAT : DFX_ERR_UNSUPPORTED,
                    "a LONG argument of %zu digits (dfx reads up to 80)", len - i);
    unsigned char mag[40] = {0};
    size_t n = 1;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return fail(m, DFX_ERR_FORMAT, "an integer argument with a character other than "
                        "a digit");
        unsigned carry = (unsigned)(s[i] - '0');
        for (size_t k = 0; k < n; k++) {
            unsigned v = mag[k] * 10u + carry;
            mag[k] = (unsigned char)v;
            carry = v >> 8;
        }
        if (carry)
            mag[n++] = (unsigned char)carry;
    }
    /* room for the sign bit, then two's complement */
    mag[n++] = 0;
    if (neg) {
        unsigned carry = 1;
        for (size_t k = 0; k < n; k++) {
            unsigned v = (unsigned char)~mag[k] + carry;
            mag[k] = (unsigned char)v;
            carry = v >> 8;
        }
    }
    return push_long(m, mag, n);
}

static dfx_status step(vm *m, unsigned char op)
{
    const unsigned char *b;
    const char *s;
    size_t len;
    uint64_t u;
    int64_t i;
    dfx__pk *v;
    dfx_status st;
    switch (op) {
    case OP_PROTO:
        if ((st = read_uint(m, 1, &u)))
            return st;
        if (u > 5)
            return fail(m, DFX_ERR_UNSUPPORTED, "pickle protocol %u (dfx reads 0 to 5)",
                        (unsigned)u);
        return DFX_OK;
    case OP_FRAME:
        if ((st = read_uint(m, 8, &u)))
            return st;
        if (m->frame_end && m->p != m->frame_end)
            return fail(m, DFX_ERR_FORMAT, "a new frame before the end of the current one");
        if (u > (uint64_t)(m->end - m->p))
            return fail(m, DFX_ERR_FORMAT, "a frame of %llu bytes where %zu are left (truncated "
                        "file?)", (unsigned long long)u, (size_t)(m->end - m->p));
        m->frame_end = u ? m->p + u : NULL;
        return DFX_OK;
    case OP_MARK:
        if (m->nmarks == MAX_MARKS)
            return fail(m, DFX_ERR_FORMAT, "more than %d MARKs open at once", MAX_MARKS);
        m->marks[m->nmarks++] = m->sp;
        return DFX_OK;
    case OP_POP:
        if (visible(m) > 0) {
            m->sp--;
            return DFX_OK;
        }
        /* pickle.py: POP on an empty stack pops a MARK */
        if (!m->nmarks)
            return fail(m, DFX_ERR_FORMAT, "the stack is empty");
        m->nmarks--;
        return DFX_OK;
    case OP_POP_MARK: {
        dfx__pk **items;
        return pop_mark(m, &items, &i);
    }
    case OP_DUP:
        if ((st = top(m, &v)))
            return st;
        return push(m, v);
    case OP_NONE:
        return push(m, m->none);
    case OP_NEWTRUE:
        return push(m, m->yes);
    case OP_NEWFALSE:
        return push(m, m->no);
    case OP_INT:
        if ((st = read_line(m, &s, &len)))
            return st;
        /* protocol 0 writes bools as INT "01" and "00" */
        if (len == 2 && s[0] == '0' && (s[1] == '0' || s[1] == '1'))
            return push(m, s[1] == '1' ? m->yes : m->no);
        if ((st = parse_decimal(m, s, len, &i)))
            return st;
        return push_int(m, i);
    case OP_LONG:
        if ((st = read_line(m, &s, &len)))
            return st;
        return push_decimal_long(m, s, len);
    case OP_BININT:
        if ((st = read_uint(m, 4, &u)))
            return st;
        return push_int(m, (int64_t)(int32_t)(uint32_t)u);
    case OP_BININT1:
    case OP_BININT2:
        if ((st = read_uint(m, op == OP_BININT1 ? 1 : 2, &u)))
            return st;
        return push_int(m, (int64_t)u);
    case OP_LONG1:
    case OP_LONG4:
        if ((st = read_uint(m, op == OP_LONG1 ? 1 : 4, &u)))
            return st;
        if (op == OP_LONG4 && u > INT32_MAX)
            return fail(m, DFX_ERR_FORMAT, "a negative byte count");
        if ((st = take(m, (size_t)u, &b)))
            return st;
        return push_long(m, b, (size_t)u);
    case OP_BINFLOAT: {
        if ((st = take(m, 8, &b)))
            return st;
        /* big-endian IEEE 754 double (pickletools: float8) */
        uint64_t bits = 0;
        for (int k = 0; k < 8; k++)
            bits = (bits << 8) | b[k];
        if (!(v = node(m, DFX__PK_FLOAT)))
            return no_memory(m);
        memcpy(&v->f, &bits, sizeof v->f);
        return push(m, v);
    }
    case OP_FLOAT: {
        if ((st = read_line(m, &s, &len)))
            return st;
        char buf[64];
        if (len == 0 || len >= sizeof buf)
            return fail(m, DFX_ERR_FORMAT, "a FLOAT argument of %zu characters", len);
        memcpy(buf, s, len);
        buf[len] = '\0';
        if (!m->c_locale && !(m->c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0)))
            return no_memory(m);
        char *endp;
        double d = strtod_l(buf, &endp, m->c_locale);
        if (*endp)
            return fail(m, DFX_ERR_FORMAT, "'%s' is not a float", buf);
        if (!(v = node(m, DFX__PK_FLOAT)))
            return no_memory(m);
        v->f = d;
        return push(m, v);
    }
    case OP_STRING:
        if ((st = read_line(m, &s, &len)))
            return st;
        return push_string_repr(m, s, len);
    case OP_UNICODE:
        if ((st = read_line(m, &s, &len)))
            return st;
        return push_raw_unicode(m, s, len);
    case OP_SHORT_BINSTRING:
    case OP_BINSTRING:
    case OP_SHORT_BINUNICODE:
    case OP_BINUNICODE:
    case OP_BINUNICODE8:
    case OP_SHORT_BINBYTES:
    case OP_BINBYTES:
    case OP_BINBYTES8:
    case OP_BYTEARRAY8: {
        int width = op == OP_SHORT_BINSTRING || op == OP_SHORT_BINUNICODE || op == OP_SHORT_BINBYTES
                        ? 1
                    : op == OP_BINSTRING || op == OP_BINUNICODE || op == OP_BINBYTES ? 4 : 8;
        if ((st = read_uint(m, width, &u)))
            return st;
        if (op == OP_BINSTRING && u > INT32_MAX)
            return fail(m, DFX_ERR_FORMAT, "a negative byte count");
        if ((st = take(m, u > SIZE_MAX ? SIZE_MAX : (size_t)u, &b)))
            return st;
        /* Python 2 str (BINSTRING) decodes with torch.load's encoding, UTF-8 */
        bool text = op == OP_SHORT_BINSTRING || op == OP_BINSTRING || op == OP_SHORT_BINUNICODE ||
                    op == OP_BINUNICODE || op == OP_BINUNICODE8;
        return push_str(m, text ? DFX__PK_STR : DFX__PK_BYTES, b, (size_t)u);
    }
    case OP_PUT:
    case OP_GET:
        if ((st = read_line(m, &s, &len)) || (st = parse_decimal(m, s, len, &i)))
            return st;
        if (i < 0)
            return fail(m, DFX_ERR_FORMAT, "a negative memo index");
        return op == OP_PUT ? put_top(m, (uint64_t)i) : memo_get(m, (uint64_t)i);
    case OP_BINPUT:
    case OP_LONG_BINPUT:
        if ((st = read_uint(m, op == OP_BINPUT ? 1 : 4, &u)))
            return st;
        return put_top(m, u);
    case OP_BINGET:
    case OP_LONG_BINGET:
        if ((st = read_uint(m, op == OP_BINGET ? 1 : 4, &u)))
            return st;
        return memo_get(m, u);
    case OP_MEMOIZE:
        return put_top(m, m->memo_len);
    }
    return step_calls(m, op);
}

static dfx_status run(vm *m, size_t *used)
{
    for (;;) {
        const unsigned char *b;
        m->op = 0;
        m->op_at = (size_t)(m->p - m->begin);
        if (m->p == m->end)
            return dfx_error_set(DFX_ERR_FORMAT, "%s: the pickle ends without its STOP opcode "
                                 "(truncated file?)", m->file);
        dfx_status st = take(m, 1, &b);
        if (st)
            return st;
        m->op = *b;
        if (m->op == OP_STOP)
            break;
        if ((st = step(m, m->op)))
            return st;
    }
    if (m->nmarks || m->sp != 1)
        return fail(m, DFX_ERR_FORMAT, "the stack holds %lld items and %d MARKs, expected "
                    "exactly the result", (long long)m->sp, m->nmarks);
    if (m->frame_end && m->p != m->frame_end)
        return fail(m, DFX_ERR_FORMAT, "STOP before the end of its frame");
    size_t n = (size_t)(m->p - m->begin);
    if (!used && m->p != m->end)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: %zu bytes after the pickle's STOP opcode",
                             m->file, (size_t)(m->end - m->p));
    if (used)
        *used = n;
    m->out->root = m->stack[0];
    return DFX_OK;
}

void dfx__pickle_free(dfx__pickle *p)
{
    if (!p)
        return;
    for (arena_block *b = p->arena, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    free(p);
}

dfx_status dfx__pickle_load(const char *file, const void *data, size_t size, size_t *used,
                            dfx__pickle **out)
{
    *out = NULL;
    if (used)
        *used = 0;
    vm m = {.file = file, .begin = data, .p = data, .end = (const unsigned char *)data + size};
    m.out = calloc(1, sizeof *m.out);
    if (!m.out)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory", file);
    dfx_status st = DFX_OK;
    if (!(m.none = node(&m, DFX__PK_NONE)) || !(m.yes = node(&m, DFX__PK_BOOL)) ||
        !(m.no = node(&m, DFX__PK_BOOL)))
        st = no_memory(&m);
    else
        m.yes->i = 1;
    if (!st)
        st = run(&m, used);
    free(m.stack);
    free(m.memo);
    if (m.c_locale)
        freelocale(m.c_locale);
    if (st) {
        dfx__pickle_free(m.out);
        return st;
    }
    *out = m.out;
    return DFX_OK;
}

const dfx__pk *dfx__pickle_root(const dfx__pickle *p)
{
    return p ? p->root : NULL;
}

int64_t dfx__pickle_persid_count(const dfx__pickle *p)
{
    return p ? p->npersids : 0;
}

const dfx__pk *dfx__pickle_persid(const dfx__pickle *p, int64_t i)
{
    return p && i >= 0 && i < p->npersids ? p->persids[i] : NULL;
}
