/* Shared by the ETF codec files: tag numbers, byte-order helpers, the zlib
 * wrappers and the arena sizes of the boxes the decoder builds. */
#ifndef KILN_DIST_ETF_INTERNAL_H
#define KILN_DIST_ETF_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/etf.h"
#include "kiln/term.h"

enum etf_tag {
    ETF_NEW_FLOAT = 70,
    ETF_BIT_BINARY = 77,
    ETF_COMPRESSED = 80,
    ETF_ATOM_CACHE_REF = 82,
    ETF_LOCAL = 121,
    ETF_NEW_PID = 88,
    ETF_NEW_PORT = 89,
    ETF_NEWER_REFERENCE = 90,
    ETF_SMALL_INTEGER = 97,
    ETF_INTEGER = 98,
    ETF_FLOAT = 99,
    ETF_ATOM = 100,
    ETF_REFERENCE = 101,
    ETF_PORT = 102,
    ETF_PID = 103,
    ETF_SMALL_TUPLE = 104,
    ETF_LARGE_TUPLE = 105,
    ETF_NIL = 106,
    ETF_STRING = 107,
    ETF_LIST = 108,
    ETF_BINARY = 109,
    ETF_SMALL_BIG = 110,
    ETF_LARGE_BIG = 111,
    ETF_NEW_FUN = 112,
    ETF_EXPORT = 113,
    ETF_NEW_REFERENCE = 114,
    ETF_SMALL_ATOM = 115,
    ETF_MAP = 116,
    ETF_FUN = 117,
    ETF_ATOM_UTF8 = 118,
    ETF_SMALL_ATOM_UTF8 = 119,
    ETF_V4_PORT = 120
};

/* FLOAT_EXT carries "%.20e" text in a fixed 31-byte field. */
#define ETF_FLOAT_EXT_BYTES 31
/* NEWER_REFERENCE_EXT: OTP accepts 0..5 ID words. */
#define ETF_MAX_REF_WORDS 5
/* NEW_FUN_EXT: Size(4) Arity(1) Uniq(16) Index(4) NumFree(4) before Module. */
#define ETF_FUN_FIXED 29

static inline uint16_t etf_get16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t etf_get32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t etf_get64(const uint8_t *p) { return ((uint64_t)etf_get32(p) << 32) | etf_get32(p + 4); }
static inline void etf_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static inline void etf_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static inline void etf_put64(uint8_t *p, uint64_t v)
{
    etf_put32(p, (uint32_t)(v >> 32));
    etf_put32(p + 4, (uint32_t)v);
}

/* Arena words the term library's constructors take for a bitstring of
 * nbits bits and for an opaque fun of len NEW_FUN_EXT bytes (etf_layout.c,
 * the one file that knows runtime/term_layout.h). */
size_t etf_bits_words(size_t nbits);
size_t etf_fun_words(size_t len);
/* The arena words the decoder's one-pass mode gives an input of len
 * bytes (the term must fit them, or it is decoded in two passes). */
size_t etf_fast_words(size_t len);
/* Empties e (as kiln_etf_enc_reset) and gives it new options, keeping its
 * buffers: one encoder can serve every message a thread sends. false: the
 * local node atom could not be made (e is then unusable until reused). */
bool etf_enc_reuse(kiln_etf_enc *e, const kiln_etf_enc_opts *opts);
/* Atoms from now until the next reuse go into refs as ATOM_CACHE_REF
 * indices, as with kiln_out_refs_hook for o.atom_ref, but looked up inline
 * (the distribution's encoder; the hook stays for other users). */
struct kiln_out_refs;
void etf_enc_set_refs(kiln_etf_enc *e, struct kiln_out_refs *refs);
/* Empties e and frees any of its buffers larger than keep bytes (a kept
 * encoder should not hold on to the memory of its largest term). */
void etf_enc_trim(kiln_etf_enc *e, size_t keep);
/* The encoder's output in order, as pieces: a borrowed binary names the
 * blob its bytes lie in (no reference taken: the encoder holds one until
 * reset), a piece of the encoder's own buffer has blob NULL. Returns the
 * number of pieces, of which at most max are written to out. */
struct etf_piece {
    const uint8_t *data;
    size_t len;
    kiln_bin *blob;
};
size_t etf_enc_pieces(const kiln_etf_enc *e, struct etf_piece *out, size_t max);
/* A reference laid out in box as kiln_ref lays one out in an arena, for
 * one read where a message would be an allocation: box has room for
 * ETF_REF_BOX_WORDS, words holds n big-endian u32 as on the wire,
 * 1 <= n <= KILN_REF_MAX_WORDS, node an atom. */
#define ETF_REF_BOX_WORDS 6
kiln_term etf_ref_box(kiln_term *box, kiln_term node, uint32_t creation, const uint8_t *words, size_t n);
/* The same for kiln_ext_pid, in ETF_EXT_PID_BOX_WORDS. */
#define ETF_EXT_PID_BOX_WORDS 4
kiln_term etf_ext_pid_box(kiln_term *box, kiln_term node, uint32_t id, uint32_t serial, uint32_t creation);
/* If t is a refcounted bitstring: its blob (not yet incref'd). */
kiln_bin *etf_bits_blob(kiln_term t);

/* FLOAT_EXT text in the C locale whatever the application set, so a
 * decimal comma never reaches the wire. */
bool etf_float_parse(const char *text, double *out); /* false: not all a number */
void etf_float_format(char *out, size_t size, double f);

/* The local node atom of ctx (nonode@nohost for NULL / node 0). */
kiln_term etf_ctx_node(const kiln_etf_ctx *ctx);
static inline uint32_t etf_ctx_creation(const kiln_etf_ctx *ctx) { return ctx ? ctx->creation : 0; }

/* Inflate a compressed term's zlib stream; the output must be exactly
 * expect bytes (which the caller has bounded). *out is kiln_malloc'd and
 * grows with the actual output, so a lying size costs nothing up front.
 * *consumed: the bytes of in the zlib stream used. */
int etf_inflate(const uint8_t *in, size_t inlen, size_t expect, uint8_t **out, size_t *consumed);
/* Deflate in into out (room for *outlen bytes) at level; KILN_OK and the
 * compressed length in *outlen, or KILN_ENOTSUP when it does not fit (the
 * caller then keeps the plain form, as OTP does). */
int etf_deflate(const uint8_t *in, size_t inlen, int level, uint8_t *out, size_t *outlen);

#endif
