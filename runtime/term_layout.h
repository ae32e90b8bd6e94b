/* Internal layout of boxed terms and the helpers the term files share.
 * The public header fixes the tag scheme and the header word; this file
 * fixes what follows the header for the boxes whose payload is not plain
 * words (binaries, funs) and declares cross-file helpers. */
#ifndef KILN_RUNTIME_TERM_LAYOUT_H
#define KILN_RUNTIME_TERM_LAYOUT_H

#include <stdatomic.h>
#include <stdint.h>

#include "kiln/term.h"
#include "message.h"

/* The size field of a header is 56 bits wide. */
#define KILN_HEADER_SIZE_MAX (UINT64_MAX >> 8)

static inline uint64_t kiln_make_header(uint64_t size, unsigned subtag)
{
    return (size << 8) | (uint64_t)subtag;
}

static inline kiln_term kiln_box_term(const kiln_term *p) { return (kiln_term)(uintptr_t)p; }
static inline kiln_term kiln_cons_term(const kiln_term *p) { return (kiln_term)(uintptr_t)p | KILN_TAG_CONS; }
static inline const kiln_term *kiln_cons_ptr(kiln_term c) { return (const kiln_term *)(uintptr_t)(c - KILN_TAG_CONS); }

/* kiln_tuple for the fixed shapes of every call and reply, without its
 * variadic arguments (which cost more than the stores): KILN_NONE if m is
 * full or an element is KILN_NONE. */
static inline kiln_term kiln_tuple2(kiln_msg *m, kiln_term a, kiln_term b)
{
    uint64_t *p = a != KILN_NONE && b != KILN_NONE ? kiln_arena_alloc(m, 3) : NULL;
    if (!p)
        return KILN_NONE;
    p[0] = kiln_make_header(2, KILN_SUB_TUPLE);
    p[1] = a;
    p[2] = b;
    return kiln_box_term(p);
}

static inline kiln_term kiln_tuple3(kiln_msg *m, kiln_term a, kiln_term b, kiln_term c)
{
    uint64_t *p = a != KILN_NONE && b != KILN_NONE && c != KILN_NONE ? kiln_arena_alloc(m, 4) : NULL;
    if (!p)
        return KILN_NONE;
    p[0] = kiln_make_header(3, KILN_SUB_TUPLE);
    p[1] = a;
    p[2] = b;
    p[3] = c;
    return kiln_box_term(p);
}

/* A local reference in 5 words, as kiln_ref lays one out (node, creation
 * | words << 32, then the 32-bit words two to a slot): words 0 and 1 are
 * n, and an alias adds words 2 and 3, the pid it routes to (id, serial
 * marked with KILN_ALIAS_MARK). Two are built for every call. */
#define KILN_ALIAS_MARK 0x80000000u
static inline kiln_term kiln_ref_put(uint64_t *p, kiln_term node, uint32_t creation, uint64_t n, kiln_term alias_pid)
{
    bool alias = !kiln_is_none(alias_pid);
    p[0] = kiln_make_header(4, KILN_SUB_REF);
    p[1] = node;
    p[2] = (uint64_t)creation | (uint64_t)(alias ? 4 : 3) << 32;
    p[3] = n;
    p[4] = alias ? kiln_local_pid_id(alias_pid) | (uint64_t)(kiln_local_pid_serial(alias_pid) | KILN_ALIAS_MARK) << 32
                 : 0;
    return kiln_box_term(p);
}

/* The number of a local reference (node and creation ours) and the pid an
 * alias routes to (KILN_NONE for a plain ref), read straight from the box
 * kiln_ref_put lays out; false for anything else. Inline: every reply
 * reads its caller's alias. */
static inline bool kiln_ref_local(kiln_term ref, kiln_term node, uint32_t creation, uint64_t *n, kiln_term *alias_pid)
{
    *alias_pid = KILN_NONE;
    if (!kiln_is_ref(ref))
        return false;
    const kiln_term *p = kiln_box_ptr(ref);
    uint32_t len = (uint32_t)(p[2] >> 32);
    if (p[1] != node || (uint32_t)p[2] != creation || len < 3)
        return false;
    *n = p[3];
    if (len == 4 && (uint32_t)(p[4] >> 32) & KILN_ALIAS_MARK)
        *alias_pid = kiln_local_pid((uint32_t)p[4], (uint32_t)(p[4] >> 32) & ~KILN_ALIAS_MARK);
    return true;
}

/* A refcounted blob. The bytes follow the header so one allocation holds both. */
struct kiln_bin {
    _Atomic size_t refc;
    size_t len;
    uint8_t data[];
};

/* Resize a blob nobody else references yet (refcount 1, no term over it):
 * a buffer filled in pieces before it is shared. NULL on failure, b kept. */
kiln_bin *kiln_bin_resize_unshared(kiln_bin *b, size_t len);
/* A binary whose bytes live in m's arena whatever their number (public
 * constructors put 64 bytes or more in a refcounted blob): for internal
 * messages that are only read as bytes, such as a distribution frame on
 * its way to the writer, where a blob would be one more allocation. */
kiln_term kiln_binary_in_arena(kiln_msg *m, const void *data, size_t len);

/* KILN_SUB_BINARY. Small bitstrings (< KILN_REFC_BIN_MIN bytes, or any
 * size from kiln_binary_in_arena) keep their bytes in the arena right after
 * the box (owner == NULL, header size counts those words too); larger ones point into a kiln_bin the box holds one
 * reference to, and the box is chained on its message's offheap list so
 * freeing the message drops the reference. Bits past nbits in the last byte
 * are always zero, which lets comparison and hashing work on whole bytes. */
struct kiln_binary_box {
    uint64_t header;
    uint64_t nbits;
    const uint8_t *data;
    struct kiln_bin *owner;
    struct kiln_binary_box *next_offheap;
};
#define KILN_BINARY_BOX_WORDS (sizeof(struct kiln_binary_box) / 8)

static inline const struct kiln_binary_box *kiln_binary_box(kiln_term t)
{
    return (const struct kiln_binary_box *)(uintptr_t)t;
}

/* KILN_SUB_FUN: the NEW_FUN_EXT bytes verbatim (Size field first), plus the
 * fields printing and ordering need, parsed once at construction. */
struct kiln_fun_box {
    uint64_t header;
    uint64_t len;      /* bytes in ext[] */
    kiln_term module;  /* atom, or KILN_NONE if the module could not be parsed */
    uint32_t arity;
    uint32_t index;    /* OldIndex */
    int64_t old_uniq;  /* OldUniq */
    uint8_t ext[];
};
#define KILN_FUN_BOX_WORDS (sizeof(struct kiln_fun_box) / 8)

static inline const struct kiln_fun_box *kiln_fun_box(kiln_term t)
{
    return (const struct kiln_fun_box *)(uintptr_t)t;
}

/* Copy a bitstring term into m: refcounted bytes are shared (incref),
 * inline bytes are copied. binary.c. */
kiln_term kiln_binary_copy(kiln_msg *m, kiln_term bits);

/* The node local pids belong to, for ordering local against remote pids
 * (default 'nonode@nohost', creation 0). The runtime sets it when it starts
 * distribution; term_compare.c. */
void kiln_term_set_local_node(kiln_term node, uint32_t creation);
kiln_term kiln_term_local_node(uint32_t *creation);

#endif
