/* Bitstrings: inline arena copies for small ones, refcounted kiln_bin
 * blobs for large ones, and sub-binaries.
 *
 * Sharing rule: a box that points at bytes it does not own inline always
 * holds its own reference on the kiln_bin that has them, taken in the
 * message the box lives in, so a term never depends on another message's
 * lifetime through its bytes. Inline bytes are never pointed at from a
 * different box: a sub-binary of an inline parent is copied (it is under
 * KILN_REFC_BIN_MIN bytes, so that is cheap), whichever message the parent
 * lives in. Sub-binaries of refcounted parents share the blob when they
 * start and end on byte boundaries, and are copied otherwise so that the
 * zeroed-tail-bits invariant holds without touching shared bytes. */
#include <string.h>

#include "alloc.h"
#include "term_layout.h"

kiln_bin *kiln_bin_alloc(size_t len)
{
    if (len > SIZE_MAX - sizeof(struct kiln_bin))
        return NULL;
    kiln_bin *b = kiln_malloc(sizeof(struct kiln_bin) + len);
    if (!b)
        return NULL;
    atomic_init(&b->refc, 1);
    b->len = len;
    return b;
}

kiln_bin *kiln_bin_resize_unshared(kiln_bin *b, size_t len)
{
    if (len > SIZE_MAX - sizeof(struct kiln_bin))
        return NULL;
    kiln_bin *nb = kiln_realloc(b, sizeof(struct kiln_bin) + len);
    if (nb)
        nb->len = len;
    return nb;
}

uint8_t *kiln_bin_data(kiln_bin *b) { return b ? b->data : NULL; }
size_t kiln_bin_len(const kiln_bin *b) { return b ? b->len : 0; }

void kiln_bin_incref(kiln_bin *b)
{
    if (b)
        atomic_fetch_add_explicit(&b->refc, 1, memory_order_relaxed);
}

void kiln_bin_decref(kiln_bin *b)
{
    /* acq_rel rather than release + fence: TSan does not model fences. */
    if (b && atomic_fetch_sub_explicit(&b->refc, 1, memory_order_acq_rel) == 1)
        kiln_free(b);
}

void kiln_offheap_release(kiln_msg *m)
{
    struct kiln_binary_box *box = m->offheap;
    while (box) {
        kiln_bin_decref(box->owner);
        box = box->next_offheap;
    }
    m->offheap = NULL;
}

static size_t bytes_for_bits(size_t nbits) { return nbits / 8 + (nbits % 8 != 0); }

static void mask_tail(uint8_t *data, size_t nbits)
{
    if (nbits % 8)
        data[nbits / 8] &= (uint8_t)(0xFFu << (8 - nbits % 8));
}

/* A box with room for nbytes inline bytes (nbytes < KILN_REFC_BIN_MIN). */
static struct kiln_binary_box *inline_box(kiln_msg *m, size_t nbits, size_t nbytes)
{
    size_t extra = (nbytes + 7) / 8;
    kiln_term *p = kiln_msg_alloc_words(m, KILN_BINARY_BOX_WORDS + extra);
    if (!p)
        return NULL;
    struct kiln_binary_box *box = (struct kiln_binary_box *)p;
    box->header = kiln_make_header(KILN_BINARY_BOX_WORDS - 1 + extra, KILN_SUB_BINARY);
    box->nbits = nbits;
    if (extra)
        p[KILN_BINARY_BOX_WORDS + extra - 1] = 0; /* keep the padding deterministic */
    box->data = (const uint8_t *)(p + KILN_BINARY_BOX_WORDS);
    box->owner = NULL;
    box->next_offheap = NULL;
    return box;
}

/* A box referencing owner (the caller's reference passes to the box). */
static kiln_term shared_box(kiln_msg *m, kiln_bin *owner, const uint8_t *data, size_t nbits)
{
    kiln_term *p = kiln_msg_alloc_words(m, KILN_BINARY_BOX_WORDS);
    if (!p)
        return KILN_NONE;
    struct kiln_binary_box *box = (struct kiln_binary_box *)p;
    box->header = kiln_make_header(KILN_BINARY_BOX_WORDS - 1, KILN_SUB_BINARY);
    box->nbits = nbits;
    box->data = data;
    box->owner = owner;
    box->next_offheap = m->offheap;
    m->offheap = box;
    return kiln_box_term(p);
}

/* Writes nbits bits of src starting at bit bit_off to dst (zero tail). */
static void copy_bits(uint8_t *dst, const uint8_t *src, size_t bit_off, size_t nbits)
{
    size_t nbytes = bytes_for_bits(nbits);
    if (nbytes == 0)
        return;
    const uint8_t *s = src + bit_off / 8;
    unsigned sh = (unsigned)(bit_off % 8);
    if (sh == 0) {
        memcpy(dst, s, nbytes);
    } else {
        /* The source holds bit_off + nbits bits, so s[i + 1] exists exactly
         * when bits of it are needed. */
        size_t src_bytes = bytes_for_bits(bit_off % 8 + nbits);
        for (size_t i = 0; i < nbytes; i++) {
            unsigned v = (unsigned)s[i] << sh;
            if (i + 1 < src_bytes)
                v |= s[i + 1] >> (8 - sh);
            dst[i] = (uint8_t)v;
        }
    }
    mask_tail(dst, nbits);
}

/* A fresh bitstring of nbits bits copied from src at bit_off. */
static kiln_term new_bits(kiln_msg *m, const uint8_t *src, size_t bit_off, size_t nbits)
{
    size_t nbytes = bytes_for_bits(nbits);
    if (nbytes < KILN_REFC_BIN_MIN) {
        struct kiln_binary_box *box = inline_box(m, nbits, nbytes);
        if (!box)
            return KILN_NONE;
        copy_bits((uint8_t *)box->data, src, bit_off, nbits);
        return kiln_box_term((const kiln_term *)box);
    }
    kiln_bin *b = kiln_bin_alloc(nbytes);
    if (!b)
        return KILN_NONE;
    copy_bits(b->data, src, bit_off, nbits);
    kiln_term t = shared_box(m, b, b->data, nbits);
    if (t == KILN_NONE)
        kiln_bin_decref(b);
    return t;
}

kiln_term kiln_binary_in_arena(kiln_msg *m, const void *data, size_t len)
{
    if (!m || (!data && len > 0) || len > KILN_HEADER_SIZE_MAX)
        return KILN_NONE;
    struct kiln_binary_box *box = inline_box(m, len * 8, len);
    if (!box)
        return KILN_NONE;
    memcpy((uint8_t *)box->data, data, len);
    return kiln_box_term((const kiln_term *)box);
}

kiln_term kiln_bitstring(kiln_msg *m, const void *data, size_t nbits)
{
    if (!m || (!data && nbits > 0) || nbits / 8 > KILN_HEADER_SIZE_MAX)
        return KILN_NONE;
    return new_bits(m, data, 0, nbits);
}

kiln_term kiln_binary(kiln_msg *m, const void *data, size_t len)
{
    if (len > SIZE_MAX / 8)
        return KILN_NONE;
    return kiln_bitstring(m, data, len * 8);
}

kiln_term kiln_binary_from_bin(kiln_msg *m, kiln_bin *b, size_t off, size_t len)
{
    if (!m || !b || off > b->len || len > b->len - off || len > SIZE_MAX / 8)
        return KILN_NONE;
    kiln_term t = shared_box(m, b, b->data + off, len * 8);
    if (t != KILN_NONE)
        kiln_bin_incref(b);
    return t;
}

kiln_term kiln_sub_binary(kiln_msg *m, kiln_term bits, size_t bit_off, size_t nbits)
{
    if (!m || !kiln_is_bitstring(bits))
        return KILN_NONE;
    const struct kiln_binary_box *p = kiln_binary_box(bits);
    if (bit_off > p->nbits || nbits > p->nbits - bit_off)
        return KILN_NONE;
    if (p->owner && bit_off % 8 == 0 && nbits % 8 == 0) {
        kiln_term t = shared_box(m, p->owner, p->data + bit_off / 8, nbits);
        if (t != KILN_NONE)
            kiln_bin_incref(p->owner);
        return t;
    }
    return new_bits(m, p->data, bit_off, nbits);
}

kiln_term kiln_binary_copy(kiln_msg *m, kiln_term bits)
{
    const struct kiln_binary_box *p = kiln_binary_box(bits);
    if (p->owner) {
        kiln_term t = shared_box(m, p->owner, p->data, p->nbits);
        if (t != KILN_NONE)
            kiln_bin_incref(p->owner);
        return t;
    }
    return new_bits(m, p->data, 0, p->nbits);
}

int kiln_get_bits(kiln_term t, const uint8_t **data, size_t *nbits)
{
    if (!kiln_is_bitstring(t))
        return KILN_EBADARG;
    const struct kiln_binary_box *p = kiln_binary_box(t);
    if (data)
        *data = p->data;
    if (nbits)
        *nbits = (size_t)p->nbits;
    return KILN_OK;
}

int kiln_get_binary(kiln_term t, const uint8_t **data, size_t *len)
{
    if (!kiln_is_bitstring(t) || kiln_binary_box(t)->nbits % 8)
        return KILN_EBADARG;
    const struct kiln_binary_box *p = kiln_binary_box(t);
    if (data)
        *data = p->data;
    if (len)
        *len = (size_t)(p->nbits / 8);
    return KILN_OK;
}
