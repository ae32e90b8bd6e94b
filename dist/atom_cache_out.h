/* The sending half of the distribution header's atom cache (brief §3),
 * split in the two steps that have different owners:
 *
 *  - while a message is encoded (on the sender's thread, no lock), its
 *    atoms are collected into a kiln_out_refs and written as
 *    ATOM_CACHE_REF indices into that list: the encoded bytes depend only
 *    on the message, never on what the peer has cached;
 *  - when the frame is queued for the connection's writer (under the node
 *    lock, so cache updates reach the socket in the order they were
 *    decided), the header's ref list is written against the connection's
 *    cache: text for atoms the peer does not have in that slot yet, the
 *    slot alone for the others.
 *
 * Slots follow OTP: 2048 of them, segment * 256 + index, picked by a hash
 * of the atom. Two atoms of one message that hash to the same slot: the
 * second is written inline, so the header never names a slot twice. */
#ifndef KILN_DIST_ATOM_CACHE_OUT_H
#define KILN_DIST_ATOM_CACHE_OUT_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/term.h"

#define KILN_ATOM_CACHE_SLOTS 2048
#define KILN_ATOM_CACHE_MAX_REFS 255

/* One connection's outgoing cache: what the peer holds in each slot (0 =
 * nothing). Zeroed when the connection is made. */
typedef struct kiln_out_cache {
    kiln_term slot[KILN_ATOM_CACHE_SLOTS];
} kiln_out_cache;

typedef struct kiln_out_refs {
    kiln_term atom[KILN_ATOM_CACHE_MAX_REFS];
    uint16_t slot[KILN_ATOM_CACHE_MAX_REFS];
    size_t n;
    size_t max_header; /* header bytes needed at most (text for every ref) */
    bool any_long;     /* a ref's text is over 255 bytes */
    uint8_t used[KILN_ATOM_CACHE_SLOTS / 8];      /* slots taken by this message */
    uint8_t ref_of[KILN_ATOM_CACHE_SLOTS];        /* their ref index, where used */
} kiln_out_refs;

void kiln_out_refs_init(kiln_out_refs *r);
/* Empties r as kiln_out_refs_init does, clearing only what its refs used:
 * for refs reused message after message. */
void kiln_out_refs_clear(kiln_out_refs *r);
/* A kiln_etf_atom_ref_fn over a kiln_out_refs. */
int kiln_out_refs_hook(void *refs, kiln_term atom);

static inline unsigned kiln_out_refs_slot(kiln_term atom)
{
    /* Any hash does (the slot travels in the header); this one spreads
     * the atom table's consecutive indices over all 2048. */
    uint64_t h = (uint64_t)atom * 0x9E3779B97F4A7C15ull;
    return (unsigned)(h >> 53);
}

/* kiln_out_refs_hook for an atom whose slot s is not yet taken. */
int kiln_out_refs_add(kiln_out_refs *r, kiln_term atom, unsigned s);

/* kiln_out_refs_hook, inline where the encoder has the refs itself (most
 * atoms of a message are a node name it already named, and the call
 * through the hook pointer cost more than the look-up). */
static inline int kiln_out_refs_index(kiln_out_refs *r, kiln_term atom)
{
    unsigned s = kiln_out_refs_slot(atom);
    if (r->used[s / 8] & (1u << (s % 8))) {
        unsigned k = r->ref_of[s];
        return r->atom[k] == atom ? (int)k : -1;
    }
    return kiln_out_refs_add(r, atom, s);
}
/* Writes NumberOfAtomCacheRefs, the flags and the refs for r against c
 * (and records in c what the peer will now hold) into out, which has room
 * for r->max_header bytes; returns the bytes written. */
size_t kiln_out_refs_header(const kiln_out_refs *r, kiln_out_cache *c, uint8_t *out);

#endif
