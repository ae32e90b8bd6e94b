/* Parsing one distribution frame's payload (after the u32 length), with
 * no I/O and no node: the part of a connection that hostile bytes reach
 * first, kept pure so it can be fuzzed on its own.
 *
 * Three framings exist (brief §3): pass-through ('p', each term with its
 * 131) when neither DIST_HDR_ATOM_CACHE nor FRAGMENTS is negotiated, and
 * otherwise a distribution header (131, 68, atom cache refs, bare terms),
 * or its fragmented forms (131, 69 first fragment; 131, 70 the rest). A
 * connection's atom cache and its unfinished fragment sequences live in a
 * kiln_frame_state. */
#ifndef KILN_DIST_FRAME_H
#define KILN_DIST_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/etf.h"

/* Frame consumed, message not complete yet (a fragment): nothing to do. */
#define KILN_FRAME_PARTIAL 1

typedef struct kiln_frame {
    kiln_msg *ctrl;  /* root: the control tuple, op checked; NULL when
                      * it was read in place (below) */
    kiln_msg *msg;   /* the message/reason term after it, or NULL */
    int64_t op;
    /* Read in place: a SEND or SEND_SENDER to a local process (its pid
     * in to), an ALIAS_SEND (the alias in to), a MONITOR_P or
     * DEMONITOR_P to a local process or a name (from, to and ref as in
     * the tuple). A pid of another node or a reference is boxed in the
     * frame itself, so these terms are valid while the kiln_frame is. */
    kiln_term to, from, ref;
    kiln_term pid_box[4];
    kiln_term ref_box[6];
} kiln_frame;

struct kiln_frag_seq;

typedef struct kiln_frame_state {
    kiln_term cache[2048];          /* atom cache: segment * 256 + index */
    struct kiln_frag_seq *seqs;     /* fragment sequences under way */
    size_t nseqs;
    size_t pending_bytes;           /* their buffered message bytes */
    size_t reserved_bytes;          /* their buffers' capacity */
    size_t max_message;             /* largest reassembled message; 0 = 128 MiB */
    bool no_fast_send;              /* tests: every control tuple built */
} kiln_frame_state;

void kiln_frame_state_init(kiln_frame_state *s);
/* Drops partial sequences (a disconnect discards them). */
void kiln_frame_state_fini(kiln_frame_state *s);

/* Decode one payload. KILN_OK fills out (free with kiln_frame_free);
 * KILN_FRAME_PARTIAL: a fragment was taken in; otherwise an error (the
 * connection should close) and nothing to free. The control tuple's op
 * must be known, the tuple the arity that op has, with a following term
 * exactly when the op takes one. */
int kiln_frame_parse(kiln_frame_state *s, const uint8_t *p, size_t len, const kiln_etf_decode_opts *opts,
                     kiln_frame *out);
void kiln_frame_free(kiln_frame *f);

/* A continuation fragment (131,70) can be received in place: given its
 * 18-byte header and the frame's length, true with *dst where its
 * len - 18 bytes of slice go, when the sequence's buffer has room for
 * them; false for anything else (kiln_frame_parse then handles the frame,
 * errors included). Once the slice is written there,
 * kiln_frame_parse_placed(s, hdr, len, ...) takes the frame as
 * kiln_frame_parse would have, with nothing else in between. */
bool kiln_frame_slice_room(kiln_frame_state *s, const uint8_t *hdr, size_t len, uint8_t **dst);
int kiln_frame_parse_placed(kiln_frame_state *s, const uint8_t *hdr, size_t len, const kiln_etf_decode_opts *opts,
                            kiln_frame *out);

#endif
