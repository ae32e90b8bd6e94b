/* What the codec needs to know about box layouts: the arena words the term
 * library's constructors take (so the decoder can size a message exactly)
 * and the blob behind a refcounted bitstring (so the encoder can lend it
 * out). Kept in one file because it is the one place that reads
 * runtime/term_layout.h. */
#include <locale.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "dist/etf_internal.h"
#include "runtime/term_layout.h"

size_t etf_bits_words(size_t nbits)
{
    size_t nbytes = nbits / 8 + (nbits % 8 != 0);
    if (nbytes >= KILN_REFC_BIN_MIN)
        return KILN_BINARY_BOX_WORDS; /* the bytes live in a kiln_bin */
    return KILN_BINARY_BOX_WORDS + (nbytes + 7) / 8;
}

size_t etf_fun_words(size_t len) { return KILN_FUN_BOX_WORDS + len / 8 + (len % 8 != 0); }

_Static_assert(ETF_REF_BOX_WORDS >= 3 + (KILN_REF_MAX_WORDS + 1) / 2, "a reference's box");

kiln_term etf_ref_box(kiln_term *box, kiln_term node, uint32_t creation, const uint8_t *words, size_t n)
{
    box[0] = kiln_make_header(2 + (n + 1) / 2, KILN_SUB_REF);
    box[1] = node;
    box[2] = (uint64_t)creation | (uint64_t)n << 32;
    for (size_t k = 0; k < n; k += 2)
        box[3 + k / 2] = etf_get32(words + 4 * k) | (k + 1 < n ? (uint64_t)etf_get32(words + 4 * k + 4) << 32 : 0);
    return kiln_box_term(box);
}

kiln_term etf_ext_pid_box(kiln_term *box, kiln_term node, uint32_t id, uint32_t serial, uint32_t creation)
{
    box[0] = kiln_make_header(ETF_EXT_PID_BOX_WORDS - 1, KILN_SUB_EXT_PID);
    box[1] = node;
    box[2] = (uint64_t)id | (uint64_t)serial << 32;
    box[3] = creation;
    return kiln_box_term(box);
}

kiln_bin *etf_bits_blob(kiln_term t) { return kiln_binary_box(t)->owner; }

kiln_term etf_ctx_node(const kiln_etf_ctx *ctx)
{
    if (ctx && ctx->node)
        return ctx->node;
    /* Interned once; kiln_atom_c is idempotent, so a race only repeats it. */
    static _Atomic kiln_term nonode;
    kiln_term a = atomic_load_explicit(&nonode, memory_order_acquire);
    if (!a) {
        a = kiln_atom_c("nonode@nohost");
        if (a != KILN_NONE)
            atomic_store_explicit(&nonode, a, memory_order_release);
    }
    return a;
}

static locale_t c_locale(void)
{
    static _Atomic(locale_t) loc;
    locale_t l = atomic_load_explicit(&loc, memory_order_acquire);
    if (!l) {
        locale_t fresh = newlocale(LC_ALL_MASK, "C", (locale_t)0);
        locale_t expected = (locale_t)0;
        if (fresh && !atomic_compare_exchange_strong(&loc, &expected, fresh)) {
            freelocale(fresh);
            fresh = expected;
        }
        l = fresh;
    }
    return l;
}

bool etf_float_parse(const char *text, double *out)
{
    locale_t l = c_locale();
    char *end;
    *out = l ? strtod_l(text, &end, l) : strtod(text, &end);
    return end != text && *end == 0;
}

void etf_float_format(char *out, size_t size, double f)
{
    locale_t l = c_locale();
    locale_t old = l ? uselocale(l) : (locale_t)0;
    snprintf(out, size, "%.20e", f);
    if (old)
        uselocale(old);
}
