/* Distribution capability flags (DFLAG_*), exchanged in the handshake.
 *
 * Values and the OTP-25 mandatory set are erts' dist.h / kernel's dist.hrl
 * (checked against erts_internal:get_dflags() on 25.2.3: mandatory
 * 0x1070F94, default send_name flags 0xD07DF7FBD). The table with what
 * each flag means and why Kiln sends it is in docs/dist.md. */
#ifndef KILN_DIST_FLAGS_H
#define KILN_DIST_FLAGS_H

#include <stdint.h>

#define KILN_DFLAG_PUBLISHED 0x1ull           /* visible node; absent = hidden */
#define KILN_DFLAG_ATOM_CACHE 0x2ull          /* obsolete */
#define KILN_DFLAG_EXTENDED_REFERENCES 0x4ull
#define KILN_DFLAG_DIST_MONITOR 0x8ull
#define KILN_DFLAG_FUN_TAGS 0x10ull
#define KILN_DFLAG_DIST_MONITOR_NAME 0x20ull
#define KILN_DFLAG_HIDDEN_ATOM_CACHE 0x40ull  /* obsolete */
#define KILN_DFLAG_NEW_FUN_TAGS 0x80ull
#define KILN_DFLAG_EXTENDED_PIDS_PORTS 0x100ull
#define KILN_DFLAG_EXPORT_PTR_TAG 0x200ull
#define KILN_DFLAG_BIT_BINARIES 0x400ull
#define KILN_DFLAG_NEW_FLOATS 0x800ull
#define KILN_DFLAG_UNICODE_IO 0x1000ull
#define KILN_DFLAG_DIST_HDR_ATOM_CACHE 0x2000ull
#define KILN_DFLAG_SMALL_ATOM_TAGS 0x4000ull
#define KILN_DFLAG_ETS_COMPRESSED 0x8000ull   /* erts-internal, never on the wire */
#define KILN_DFLAG_UTF8_ATOMS 0x10000ull
#define KILN_DFLAG_MAP_TAG 0x20000ull
#define KILN_DFLAG_BIG_CREATION 0x40000ull
#define KILN_DFLAG_SEND_SENDER 0x80000ull
#define KILN_DFLAG_BIG_SEQTRACE_LABELS 0x100000ull
#define KILN_DFLAG_PENDING_CONNECT 0x200000ull /* erts-internal */
#define KILN_DFLAG_EXIT_PAYLOAD 0x400000ull
#define KILN_DFLAG_FRAGMENTS 0x800000ull
#define KILN_DFLAG_HANDSHAKE_23 0x1000000ull
#define KILN_DFLAG_UNLINK_ID 0x2000000ull
#define KILN_DFLAG_MANDATORY_25_DIGEST 0x4000000ull
#define KILN_DFLAG_RESERVED 0xF8000000ull
#define KILN_DFLAG_SPAWN (1ull << 32)
#define KILN_DFLAG_NAME_ME (1ull << 33)
#define KILN_DFLAG_V4_NC (1ull << 34)
#define KILN_DFLAG_ALIAS (1ull << 35)
#define KILN_DFLAG_LOCAL_EXT (1ull << 36)     /* OTP 26+, erts-internal */
#define KILN_DFLAG_ALTACT_SIG (1ull << 37)    /* OTP 28 */

/* What OTP 25 refuses a peer for lacking (dist.hrl MANDATORY_DFLAGS_25):
 * a missing one makes the acceptor answer not_allowed. = 0x1070F94. */
#define KILN_DFLAGS_MANDATORY_25                                                              \
    (KILN_DFLAG_EXTENDED_REFERENCES | KILN_DFLAG_FUN_TAGS | KILN_DFLAG_EXTENDED_PIDS_PORTS | \
     KILN_DFLAG_NEW_FUN_TAGS | KILN_DFLAG_EXPORT_PTR_TAG | KILN_DFLAG_BIT_BINARIES |         \
     KILN_DFLAG_NEW_FLOATS | KILN_DFLAG_UTF8_ATOMS | KILN_DFLAG_MAP_TAG |                    \
     KILN_DFLAG_BIG_CREATION | KILN_DFLAG_HANDSHAKE_23)
/* OTP 26+ also insists on these two. */
#define KILN_DFLAGS_MANDATORY_26 (KILN_DFLAGS_MANDATORY_25 | KILN_DFLAG_UNLINK_ID | KILN_DFLAG_V4_NC)

/* Kiln's hidden-node set, 0xD07070FBC: the OTP-26 mandatory set (so 26+
 * peers accept us too) plus what the runtime implements today: monitors
 * (also by name, else OTP sends no MONITOR_P at all), SPAWN (rpc/erpc),
 * ALIAS (gen_server replies to [alias|Ref]) and MANDATORY_25_DIGEST.
 * Deliberately absent until the code paths exist: SEND_SENDER,
 * EXIT_PAYLOAD and FRAGMENTS (0xC80000), DIST_HDR_ATOM_CACHE (0x2000).
 * Leaving a flag out is always safe: OTP then uses the older form. */
#define KILN_DFLAGS_HIDDEN                                                                    \
    (KILN_DFLAGS_MANDATORY_26 | KILN_DFLAG_DIST_MONITOR | KILN_DFLAG_DIST_MONITOR_NAME |    \
     KILN_DFLAG_MANDATORY_25_DIGEST | KILN_DFLAG_SPAWN | KILN_DFLAG_ALIAS)
/* The visible set (0xD07070FBD) differs only by PUBLISHED. */
#define KILN_DFLAGS_VISIBLE (KILN_DFLAGS_HIDDEN | KILN_DFLAG_PUBLISHED)

/* What Kiln demands of a peer: the OTP-25 set, like a 25.x node. */
#define KILN_DFLAGS_REQUIRED KILN_DFLAGS_MANDATORY_25

/* OTP 25 lets the single MANDATORY_25_DIGEST bit stand for the whole
 * mandatory set; peers' flags are expanded before they are checked or
 * ANDed (dist_util:expand_mandatory_25_flag). */
static inline uint64_t kiln_dflags_expand(uint64_t peer)
{
    return (peer & KILN_DFLAG_MANDATORY_25_DIGEST) ? (peer | KILN_DFLAGS_MANDATORY_25) : peer;
}

/* The required flags the (already expanded) peer flags lack; 0 = none. */
static inline uint64_t kiln_dflags_missing(uint64_t peer_expanded, uint64_t required)
{
    return required & ~peer_expanded;
}

/* Negotiated flags: both sides use exactly what both offered. PUBLISHED
 * survives only if both are visible, as in dist_util:adjust_flags. */
static inline uint64_t kiln_dflags_negotiate(uint64_t mine, uint64_t peer)
{
    return mine & kiln_dflags_expand(peer);
}

#endif
