/* External Term Format (ETF): Erlang's term_to_binary encoding, the wire
 * format of distribution.
 *
 * Decoding validates the whole input first (every length bounded by the
 * bytes left, nesting capped, atoms checked) and computes the exact number
 * of arena words the term needs, then builds it in one allocation. Inputs
 * under 16 KiB that cannot nest past the depth cap are decoded in one pass
 * instead, into one allocation sized by a guess of a quarter word per byte;
 * a term that does not fit it, a fun, an atom not yet in the table or any
 * error sends the input through the two passes, so errors are the same and
 * bad input never creates atoms. Neither mode recurses on the C stack, so
 * hostile depth or million-element lists cost heap, never stack, and no
 * length field can make the decoder allocate more than a small multiple of
 * the input.
 *
 * Encoding appends to a reusable encoder: a growable byte buffer plus an
 * iovec list in which large refcounted binaries are referenced, not copied.
 *
 * Two shapes of input/output:
 *   whole terms: 131 then a term (or 131, 80, Size, zlib data);
 *   bare terms:  no 131, as inside a distribution header, where atoms may
 *                be ATOM_CACHE_REF (82) indices into the header's refs.
 */
#ifndef KILN_ETF_H
#define KILN_ETF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "kiln/error.h"
#include "kiln/term.h"

#ifdef __cplusplus
extern "C" {
#endif

#pragma GCC visibility push(default)

#define KILN_ETF_VERSION 131

/* Defaults for the decoder limits (a 0 field in the options means these). */
#define KILN_ETF_DEFAULT_MAX_DEPTH 10000u
#define KILN_ETF_DEFAULT_MAX_UNCOMPRESSED ((size_t)64 << 20)
/* Binaries of at least this many bytes are handed to the encoder's iovec
 * list by reference (when they are refcounted) instead of being copied. */
#define KILN_ETF_DEFAULT_IOV_THRESHOLD 4096u

/* Who "we" are: pids of this node travel as NEW_PID_EXT with this node atom
 * and creation, and incoming pids that carry them become local pid
 * immediates. Zero-initialised (node == 0) means nonode@nohost, creation 0,
 * which is what a non-distributed erl uses. */
typedef struct kiln_etf_ctx {
    kiln_term node;    /* local node atom, or 0 for 'nonode@nohost' */
    uint32_t creation;
} kiln_etf_ctx;

typedef struct kiln_etf_decode_opts {
    const kiln_etf_ctx *ctx;      /* NULL: nonode@nohost, creation 0 */
    size_t max_depth;             /* 0: KILN_ETF_DEFAULT_MAX_DEPTH */
    size_t max_uncompressed;      /* 0: KILN_ETF_DEFAULT_MAX_UNCOMPRESSED */
    /* Atoms of the distribution header this term belongs to; ATOM_CACHE_REF
     * index i means atom_refs[i]. Without them tag 82 is KILN_EBADTERM.
     * Inside a fun the refs are spelled out in the bytes it keeps (Sizes
     * fixed), so the fun means the same outside this packet. */
    const kiln_term *atom_refs;
    size_t n_atom_refs;
    /* Like binary_to_term(B, [safe]): refuse to create atoms (KILN_ENOTREG). */
    bool existing_atoms_only;
    /* The input lies in this refcounted blob: a binary that is at least an
     * eighth of the blob becomes a reference into it instead of a copy,
     * and keeps the blob alive as long as it lives (as Erlang's
     * sub-binaries do; the eighth bounds what a binary can pin). */
    kiln_bin *source;
} kiln_etf_decode_opts;

/* ---- decoding ---- */

/* Decode a whole term (131 first) into a new message whose root is the
 * term. If used is NULL the term must fill the input exactly
 * (KILN_ETRAILING otherwise); else *used gets the bytes consumed. */
int kiln_etf_decode(const void *data, size_t len, const kiln_etf_decode_opts *opts,
                    kiln_msg **out, size_t *used);
/* Decode a bare term (no 131: a control message or payload inside a
 * distribution header) into a new message; *used (required) gets the bytes
 * consumed so the caller can decode the next term. */
int kiln_etf_decode_bare(const void *data, size_t len, const kiln_etf_decode_opts *opts,
                         kiln_msg **out, size_t *used);
/* Decode into an existing message m (one arena allocation for the whole
 * term); the term goes to *term, m's root is left alone. bare selects the
 * shape. On error m may hold unreachable garbage words but stays valid. */
int kiln_etf_decode_into(kiln_msg *m, const void *data, size_t len, bool bare,
                         const kiln_etf_decode_opts *opts, kiln_term *term, size_t *used);
/* Validation pass only: checks the input and reports the arena words the
 * term needs (exact) and the bytes it spans. Compressed input is inflated
 * to be checked. Creates no atoms. */
int kiln_etf_measure(const void *data, size_t len, bool bare, const kiln_etf_decode_opts *opts,
                     size_t *words, size_t *used);

/* ---- encoding ---- */

/* Asked once per atom by a distribution encoder with an atom cache: return
 * the header ref index (0..254) to emit ATOM_CACHE_REF, or -1 to write the
 * atom inline. */
typedef int (*kiln_etf_atom_ref_fn)(void *arg, kiln_term atom);

typedef struct kiln_etf_enc_opts {
    const kiln_etf_ctx *ctx;     /* NULL: nonode@nohost, creation 0 */
    /* 0: FLOAT_EXT floats; 1: NEW_FLOAT_EXT, Latin-1 atoms as ATOM_EXT (what
     * term_to_binary does by default in OTP 25); 2: UTF-8 atom tags always
     * (distribution, and term_to_binary's default from OTP 26). */
    int minor_version;
    size_t iov_threshold;         /* 0: KILN_ETF_DEFAULT_IOV_THRESHOLD */
    kiln_etf_atom_ref_fn atom_ref;/* NULL: no atom cache */
    void *atom_ref_arg;
} kiln_etf_enc_opts;

/* Options for distribution traffic (minor_version 2, no atom cache). */
#define KILN_ETF_ENC_OPTS_DIST {NULL, 2, 0, NULL, NULL}

typedef struct kiln_etf_enc kiln_etf_enc;

/* NULL opts: minor_version 1 (term_to_binary in OTP 25). */
kiln_etf_enc *kiln_etf_enc_new(const kiln_etf_enc_opts *opts);
void kiln_etf_enc_free(kiln_etf_enc *e);
/* Forget the output (keeps the buffers for reuse) and drop the references
 * held on binaries handed out as iovecs. */
void kiln_etf_enc_reset(kiln_etf_enc *e);
/* Append raw bytes (a distribution header, the 131 byte). */
int kiln_etf_enc_raw(kiln_etf_enc *e, const void *bytes, size_t len);
/* Append t without the version byte (inside a distribution header). */
int kiln_etf_enc_term(kiln_etf_enc *e, kiln_term t);
/* Append 131 then t. */
int kiln_etf_enc_whole(kiln_etf_enc *e, kiln_term t);
/* Total bytes appended since the last reset. */
size_t kiln_etf_enc_size(const kiln_etf_enc *e);
/* The output as iovecs, valid until the next append, reset or free. */
const struct iovec *kiln_etf_enc_iov(kiln_etf_enc *e, size_t *n);
/* Copy the whole output into dst (which has room for kiln_etf_enc_size). */
void kiln_etf_enc_copy(const kiln_etf_enc *e, void *dst);

/* ---- term_to_binary / binary_to_term for users ---- */

typedef struct kiln_t2b_opts {
    int compressed;    /* 0: off; 1..9: zlib level; -1: [compressed] (level 6) */
    int minor_version; /* as in kiln_etf_enc_opts; OTP 25's default is 1 */
    const kiln_etf_ctx *ctx;
} kiln_t2b_opts;
#define KILN_T2B_OPTS_DEFAULT {0, 1, NULL}

/* term_to_binary(T, Opts) into a malloc'd buffer (free with free()). Like
 * OTP, a compressed encoding is kept only when it is smaller. */
int kiln_etf_term_to_bytes(kiln_term t, const kiln_t2b_opts *opts, uint8_t **out, size_t *len);
/* term_to_binary(T, Opts) as a binary term in m. NULL opts: defaults. */
int kiln_term_to_binary(kiln_msg *m, kiln_term t, const kiln_t2b_opts *opts, kiln_term *out);
/* binary_to_term(Bin): a new message holding the decoded term. When bin is
 * refcounted (and opts gives no source), it is the source: binaries inside
 * it that are at least an eighth of it are shared, not copied. */
int kiln_binary_to_term(kiln_term bin, const kiln_etf_decode_opts *opts, kiln_msg **out);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif
