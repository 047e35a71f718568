/* libFuzzer target: the restricted unpickler and the torch checkpoint reader
 * on the same bytes, straight from memory (a pickle, a legacy torch file or
 * a zip archive). An accepted pickle must be a well-formed tree; an accepted
 * checkpoint must hand out tensors whose every byte lies inside the input
 * (or in a copy of its own), and a refusal must say why. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond))                                                           \
            __builtin_trap();                                                  \
    } while (0)

/* Nodes are a graph (the memo shares them, lists may hold themselves):
 * the walk stops at a fixed depth. */
static void walk(const dfx__pk *v, int depth)
{
    CHECK(v);
    if (depth > 6)
        return;
    switch (v->type) {
    case DFX__PK_STR:
    case DFX__PK_BYTES:
    case DFX__PK_BIGINT:
    case DFX__PK_GLOBAL:
        CHECK(v->s && v->s[v->len] == '\0');
        break;
    case DFX__PK_CALL:
        CHECK(v->s && v->arg && v->arg->type == DFX__PK_TUPLE);
        walk(v->arg, depth + 1);
        break;
    case DFX__PK_PERSID:
        walk(v->arg, depth + 1);
        break;
    case DFX__PK_DICT:
        CHECK(v->n % 2 == 0);
        break;
    default:
        break;
    }
    CHECK(v->n >= 0 && v->n <= v->cap);
    for (int64_t i = 0; i < v->n; i++)
        walk(v->items[i], depth + 1);
}

static volatile unsigned sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    dfx__pickle *p = NULL;
    size_t used = 0;
    if (dfx__pickle_load("fuzz.pkl", data, size, &used, &p) == DFX_OK) {
        CHECK(p && used >= 1 && used <= size && data[used - 1] == '.');
        walk(dfx__pickle_root(p), 0);
        for (int64_t i = 0; i < dfx__pickle_persid_count(p); i++)
            CHECK(dfx__pickle_persid(p, i)->type == DFX__PK_PERSID);
        dfx__pickle_free(p);
    } else {
        CHECK(!p && dfx_error_message()[0]);
    }

    dfx__torch *t = NULL;
    if (dfx__torch_open_memory("fuzz.ckpt", data, size, &t) != DFX_OK) {
        CHECK(!t && dfx_error_message()[0]);
        return 0;
    }
    unsigned sum = 0;
    for (int64_t i = 0; i < dfx__torch_count(t); i++) {
        CHECK(dfx__torch_name(t, i));
        const dfx_tensor *v = dfx__torch_tensor(t, i);
        size_t nbytes = dfx_tensor_nbytes(v);
        const uint8_t *b = v->data;
        if (b >= data && b <= data + size)
            CHECK(nbytes <= (size_t)(data + size - b));
        /* every byte read: a copy out of bounds is the sanitizer's to see */
        for (size_t k = 0; k < nbytes; k++)
            sum += b[k];
    }
    CHECK(!dfx__torch_name(t, dfx__torch_count(t)));
    sink = sum;
    dfx__torch_close(t);
    return 0;
}
