/* Distribution frame parsing (see frame.h). */
#include "dist/frame.h"

#include <stdbool.h>
#include <string.h>

#include "dist/etf_internal.h"
#include "runtime/alloc.h"
#include "runtime/term_layout.h"

_Static_assert(sizeof(((kiln_frame *)0)->ref_box) >= ETF_REF_BOX_WORDS * sizeof(kiln_term), "a reference's box");
_Static_assert(sizeof(((kiln_frame *)0)->pid_box) >= ETF_EXT_PID_BOX_WORDS * sizeof(kiln_term), "a pid's box");

enum dop {
    DOP_LINK = 1, DOP_SEND = 2, DOP_EXIT = 3, DOP_UNLINK = 4, DOP_REG_SEND = 6, DOP_GROUP_LEADER = 7,
    DOP_EXIT2 = 8, DOP_SEND_TT = 12, DOP_EXIT_TT = 13, DOP_REG_SEND_TT = 16, DOP_EXIT2_TT = 18,
    DOP_MONITOR_P = 19, DOP_DEMONITOR_P = 20, DOP_MONITOR_P_EXIT = 21, DOP_SEND_SENDER = 22,
    DOP_SEND_SENDER_TT = 23, DOP_PAYLOAD_EXIT = 24, DOP_PAYLOAD_EXIT_TT = 25, DOP_PAYLOAD_EXIT2 = 26,
    DOP_PAYLOAD_EXIT2_TT = 27, DOP_PAYLOAD_MONITOR_P_EXIT = 28, DOP_SPAWN_REQUEST = 29, DOP_SPAWN_REQUEST_TT = 30,
    DOP_SPAWN_REPLY = 31, DOP_SPAWN_REPLY_TT = 32, DOP_ALIAS_SEND = 33, DOP_ALIAS_SEND_TT = 34,
    DOP_UNLINK_ID = 35, DOP_UNLINK_ID_ACK = 36
};

/* Arity of each op's tuple and whether a term follows it (brief §4). */
static bool shape(int64_t op, size_t *arity, bool *payload)
{
    switch (op) {
    case DOP_LINK: case DOP_UNLINK: case DOP_GROUP_LEADER: *arity = 3; *payload = false; return true;
    case DOP_SEND: case DOP_SEND_SENDER: case DOP_ALIAS_SEND: *arity = 3; *payload = true; return true;
    case DOP_SEND_TT: case DOP_SEND_SENDER_TT: case DOP_ALIAS_SEND_TT: *arity = 4; *payload = true; return true;
    case DOP_EXIT: case DOP_EXIT2: *arity = 4; *payload = false; return true;
    case DOP_EXIT_TT: case DOP_EXIT2_TT: *arity = 5; *payload = false; return true;
    case DOP_REG_SEND: *arity = 4; *payload = true; return true;
    case DOP_REG_SEND_TT: *arity = 5; *payload = true; return true;
    case DOP_MONITOR_P: case DOP_DEMONITOR_P: *arity = 4; *payload = false; return true;
    case DOP_MONITOR_P_EXIT: *arity = 5; *payload = false; return true;
    case DOP_PAYLOAD_EXIT: case DOP_PAYLOAD_EXIT2: *arity = 3; *payload = true; return true;
    case DOP_PAYLOAD_EXIT_TT: case DOP_PAYLOAD_EXIT2_TT: *arity = 4; *payload = true; return true;
    case DOP_PAYLOAD_MONITOR_P_EXIT: *arity = 4; *payload = true; return true;
    case DOP_SPAWN_REQUEST: *arity = 6; *payload = true; return true;
    case DOP_SPAWN_REQUEST_TT: *arity = 7; *payload = true; return true;
    case DOP_SPAWN_REPLY: *arity = 5; *payload = false; return true;
    case DOP_SPAWN_REPLY_TT: *arity = 6; *payload = false; return true;
    case DOP_UNLINK_ID: case DOP_UNLINK_ID_ACK: *arity = 4; *payload = false; return true;
    default: return false;
    }
}

void kiln_frame_free(kiln_frame *f)
{
    kiln_msg_free(f->ctrl);
    kiln_msg_free(f->msg);
    f->ctrl = f->msg = NULL;
}

/* ---- state ---- */

#define MAX_SEQS 256
#define MAX_PENDING ((size_t)256 << 20)
#define DEFAULT_MAX_MESSAGE ((size_t)128 << 20)

struct kiln_frag_seq {
    struct kiln_frag_seq *next;
    uint64_t id;
    uint64_t expect;      /* the next FragId */
    kiln_msg *ctrl;       /* decoded from the first fragment */
    int64_t op;
    kiln_term refs[255];  /* the first fragment's atom-cache refs */
    size_t nrefs;
    /* The message bytes so far, in a blob: the decoded message's large
     * binaries point into it rather than being copied out. */
    kiln_bin *bin;
    size_t len, cap;
};

void kiln_frame_state_init(kiln_frame_state *s)
{
    memset(s, 0, sizeof(*s));
}

static void seq_free(kiln_frame_state *s, struct kiln_frag_seq *q)
{
    s->reserved_bytes -= q->cap;
    kiln_msg_free(q->ctrl);
    if (q->bin)
        kiln_bin_decref(q->bin);
    kiln_free(q);
}

void kiln_frame_state_fini(kiln_frame_state *s)
{
    while (s->seqs) {
        struct kiln_frag_seq *q = s->seqs;
        s->seqs = q->next;
        seq_free(s, q);
    }
    s->nseqs = 0;
    s->pending_bytes = 0;
    s->reserved_bytes = 0;
}

/* ---- reading ---- */

/* The atom-cache part of a distribution header at p[*off]: NumRefs, the
 * flag nibbles, then each ref, new ones entering the cache (brief §3). */
static int read_refs(kiln_frame_state *s, const uint8_t *p, size_t len, size_t *off, kiln_term *refs, size_t *nrefs,
                     const kiln_etf_decode_opts *opts)
{
    if (*off >= len)
        return KILN_ETRUNCATED;
    size_t n = p[(*off)++];
    *nrefs = n;
    if (n == 0)
        return KILN_OK;
    size_t nflags = n / 2 + 1;
    if (len - *off < nflags)
        return KILN_ETRUNCATED;
    const uint8_t *flags = p + *off;
    *off += nflags;
    bool long_atoms = (flags[n / 2] >> (4 * (n % 2))) & 1;
    for (size_t i = 0; i < n; i++) {
        unsigned nib = (flags[i / 2] >> (4 * (i % 2))) & 0xF;
        unsigned seg = nib & 7;
        if (*off >= len)
            return KILN_ETRUNCATED;
        unsigned slot = seg * 256 + p[(*off)++];
        if (nib & 8) {
            size_t alen;
            if (long_atoms) {
                if (len - *off < 2)
                    return KILN_ETRUNCATED;
                alen = (size_t)p[*off] << 8 | p[*off + 1];
                *off += 2;
            } else {
                if (*off >= len)
                    return KILN_ETRUNCATED;
                alen = p[(*off)++];
            }
            if (len - *off < alen)
                return KILN_ETRUNCATED;
            kiln_term a;
            int rc = opts->existing_atoms_only ? kiln_atom_existing((const char *)p + *off, alen, &a)
                                               : kiln_atom((const char *)p + *off, alen, &a);
            if (rc != KILN_OK)
                return rc;
            *off += alen;
            s->cache[slot] = a;
            refs[i] = a;
        } else {
            if (!s->cache[slot])
                return KILN_EBADTERM; /* a "known" entry we never saw */
            refs[i] = s->cache[slot];
        }
    }
    return KILN_OK;
}

static int decode(const uint8_t *p, size_t len, bool bare, const kiln_etf_decode_opts *opts, const kiln_term *refs,
                  size_t nrefs, kiln_msg **out, size_t *used)
{
    kiln_etf_decode_opts o = *opts;
    o.atom_refs = refs;
    o.n_atom_refs = nrefs;
    return bare ? kiln_etf_decode_bare(p, len, &o, out, used) : kiln_etf_decode(p, len, &o, out, used);
}

/* Check the control tuple and its payload once both are known. */
static int check(kiln_frame *out)
{
    kiln_term t = kiln_msg_term(out->ctrl);
    size_t arity;
    bool payload;
    if (!kiln_is_tuple(t) || kiln_tuple_arity(t) < 1 || kiln_get_int64(kiln_tuple_get(t, 0), &out->op) != KILN_OK ||
        !shape(out->op, &arity, &payload) || kiln_tuple_arity(t) != arity || payload != (out->msg != NULL)) {
        kiln_frame_free(out);
        return KILN_EPROTO;
    }
    return KILN_OK;
}

static struct kiln_frag_seq *find_seq(kiln_frame_state *s, uint64_t id, struct kiln_frag_seq ***link)
{
    for (struct kiln_frag_seq **pp = &s->seqs; *pp; pp = &(*pp)->next) {
        if ((*pp)->id == id) {
            *link = pp;
            return *pp;
        }
    }
    return NULL;
}

/* The buffer a sequence grows to when need bytes no longer fit. The
 * fragments still to come (each about per_frag bytes) say how big the
 * message will be, so the buffer is sized once rather than doubled (each
 * doubling copies what came so far: with 256 KiB fragments, the copies of
 * a 1 MiB message cost more than its reassembly). The peer's count is
 * believed only so far: at most 16 times what it has sent, the message
 * limit, and the buffers of all sequences together within MAX_PENDING
 * beyond what they must hold; a bad guess costs only a later grow or an
 * unused tail, trimmed at the end. */
static size_t grow_to(const kiln_frame_state *s, size_t cap, size_t need, size_t per_frag, uint64_t frags_left,
                      size_t max)
{
    size_t want = need;
    if (per_frag && frags_left) {
        size_t bound = need > max / 16 ? max : need * 16;
        if (bound > max)
            bound = max;
        uint64_t more = frags_left > bound / per_frag ? bound : per_frag * frags_left;
        want = need + more > bound ? bound : need + (size_t)more;
    } else if (cap) {
        want = cap * 2 > max ? max : cap * 2; /* nothing to go on: geometric */
    }
    if (want < need)
        want = need;
    size_t others = s->reserved_bytes - cap;
    if (others + want > MAX_PENDING)
        want = MAX_PENDING > others + need ? MAX_PENDING - others : need;
    return want;
}

static int first_fragment(kiln_frame_state *s, const uint8_t *p, size_t len, const kiln_etf_decode_opts *opts,
                          kiln_frame *out)
{
    if (len < 2 + 16)
        return KILN_ETRUNCATED;
    uint64_t id = etf_get64(p + 2), frag = etf_get64(p + 10);
    size_t off = 18, nrefs, used;
    if (frag == 0)
        return KILN_EPROTO;
    struct kiln_frag_seq **link;
    if (find_seq(s, id, &link))
        return KILN_EPROTO; /* a sequence id still under way */
    kiln_term refs[255];
    int rc = read_refs(s, p, len, &off, refs, &nrefs, opts);
    if (rc != KILN_OK)
        return rc;
    rc = decode(p + off, len - off, true, opts, refs, nrefs, &out->ctrl, &used);
    if (rc != KILN_OK)
        return rc;
    off += used;
    if (frag == 1) {
        /* A sequence of one: the message follows in full. */
        out->msg = NULL;
        if (off < len && (rc = decode(p + off, len - off, true, opts, refs, nrefs, &out->msg, &used)) != KILN_OK) {
            kiln_frame_free(out);
            return rc;
        }
        if (out->msg && off + used != len) {
            kiln_frame_free(out);
            return KILN_ETRAILING;
        }
        return check(out);
    }
    size_t max = s->max_message ? s->max_message : DEFAULT_MAX_MESSAGE;
    size_t slice = len - off;
    if (s->nseqs >= MAX_SEQS || slice > max || s->pending_bytes + slice > MAX_PENDING) {
        kiln_frame_free(out);
        return KILN_ETOOBIG;
    }
    struct kiln_frag_seq *q = kiln_calloc(1, sizeof(*q));
    /* The later fragments carry no control tuple: each about this whole
     * frame's size. */
    size_t cap = slice ? grow_to(s, 0, slice, len, frag - 1, max) : 0;
    if (!q || (cap && !(q->bin = kiln_bin_alloc(cap)))) {
        kiln_free(q);
        kiln_frame_free(out);
        return KILN_ENOMEM;
    }
    q->id = id;
    q->expect = frag - 1;
    q->ctrl = out->ctrl;
    out->ctrl = NULL;
    memcpy(q->refs, refs, nrefs * sizeof(kiln_term));
    q->nrefs = nrefs;
    if (slice) /* an empty first slice leaves bin NULL */
        memcpy(kiln_bin_data(q->bin), p + off, slice);
    q->len = slice;
    q->cap = cap;
    s->reserved_bytes += cap;
    q->next = s->seqs;
    s->seqs = q;
    s->nseqs++;
    s->pending_bytes += slice;
    return KILN_FRAME_PARTIAL;
}

/* placed: the slice is already where kiln_frame_slice_room said; p holds
 * only the 18 header bytes. */
static int next_fragment(kiln_frame_state *s, const uint8_t *p, size_t len, const kiln_etf_decode_opts *opts,
                         kiln_frame *out, bool placed)
{
    if (len < 2 + 16)
        return KILN_ETRUNCATED;
    uint64_t id = etf_get64(p + 2), frag = etf_get64(p + 10);
    struct kiln_frag_seq **link;
    struct kiln_frag_seq *q = find_seq(s, id, &link);
    /* OTP too requires ids to count down by exactly one. */
    if (!q || frag != q->expect)
        return KILN_EPROTO;
    size_t slice = len - 18;
    size_t max = s->max_message ? s->max_message : DEFAULT_MAX_MESSAGE;
    if (q->len + slice > max || s->pending_bytes + slice > MAX_PENDING)
        return KILN_ETOOBIG;
    if (q->len + slice > q->cap) {
        size_t ncap = grow_to(s, q->cap, q->len + slice, slice, frag - 1, max);
        kiln_bin *nb = q->bin ? kiln_bin_resize_unshared(q->bin, ncap) : kiln_bin_alloc(ncap);
        if (!nb)
            return KILN_ENOMEM;
        q->bin = nb;
        s->reserved_bytes += ncap - q->cap;
        q->cap = ncap;
    }
    if (slice && !placed)
        memcpy(kiln_bin_data(q->bin) + q->len, p + 18, slice);
    q->len += slice;
    s->pending_bytes += slice;
    if (frag > 1) {
        q->expect = frag - 1;
        return KILN_FRAME_PARTIAL;
    }
    /* The last one: the message is whole. */
    *link = q->next;
    s->nseqs--;
    s->pending_bytes -= q->len;
    out->ctrl = q->ctrl;
    q->ctrl = NULL;
    out->msg = NULL;
    int rc = KILN_OK;
    size_t used = 0;
    if (q->len) {
        /* Spare capacity would stay pinned by the binaries that share the
         * blob: trimmed first (nothing points into it yet). */
        if (q->cap > q->len) {
            kiln_bin *nb = kiln_bin_resize_unshared(q->bin, q->len);
            if (nb) {
                q->bin = nb;
                s->reserved_bytes -= q->cap - q->len;
                q->cap = q->len;
            }
        }
        kiln_etf_decode_opts o = *opts;
        o.source = q->bin;
        if ((rc = decode(kiln_bin_data(q->bin), q->len, true, &o, q->refs, q->nrefs, &out->msg, &used)) ==
                KILN_OK &&
            used != q->len)
            rc = KILN_ETRAILING;
    }
    seq_free(s, q);
    if (rc != KILN_OK) {
        kiln_frame_free(out);
        return rc;
    }
    return check(out);
}

/* ---- control tuples read in place ----
 *
 * Most frames are SEND or SEND_SENDER to a local process, or a call's
 * ALIAS_SEND reply, MONITOR_P and DEMONITOR_P. Their control tuple is
 * read where it lies (the op, the unused atom or the sender skipped, the
 * rest taken from the bytes, as the decoder would build it) instead of
 * being built into a message that is freed at once. Anything else
 * (another op, a destination pid on another node or of another
 * creation, an encoding not read here) takes the general way, which also
 * reports every error. */

/* The atom at p[*at], if it is one that exists already: a text form is
 * looked up, never created (a new atom, or bad text, is left to the
 * general way, which makes or refuses it exactly as for any term).
 * Latin-1 text only when it is ASCII, which reads the same as UTF-8. */
static bool peek_atom(const uint8_t *p, size_t len, size_t *at, const kiln_term *refs, size_t nrefs, kiln_term *atom)
{
    size_t i = *at, n, hdr;
    if (len - i < 2)
        return false;
    if (p[i] == 82) { /* ATOM_CACHE_REF */
        if (p[i + 1] >= nrefs)
            return false;
        *atom = refs[p[i + 1]];
        *at = i + 2;
        return true;
    }
    bool latin1 = p[i] == 115 || p[i] == 100;
    if (p[i] == 119 || p[i] == 115) { /* SMALL_ATOM_UTF8_EXT, SMALL_ATOM_EXT */
        n = p[i + 1];
        hdr = 2;
    } else if ((p[i] == 118 || p[i] == 100) && len - i >= 3) { /* ATOM_UTF8_EXT, ATOM_EXT */
        n = (size_t)p[i + 1] << 8 | p[i + 2];
        hdr = 3;
    } else {
        return false;
    }
    if (len - i - hdr < n)
        return false;
    for (size_t k = 0; latin1 && k < n; k++)
        if (p[i + hdr + k] >= 0x80)
            return false;
    if (kiln_atom_existing((const char *)p + i + hdr, n, atom) != KILN_OK)
        return false;
    *at = i + hdr + n;
    return true;
}

/* A NEW_PID_EXT at p[*at]: its node, and the three numbers in w. */
static bool peek_pid(const uint8_t *p, size_t len, size_t *at, const kiln_term *refs, size_t nrefs, kiln_term *node,
                     uint32_t w[3])
{
    size_t i = *at;
    if (i >= len || p[i] != 88)
        return false;
    i++;
    if (!peek_atom(p, len, &i, refs, nrefs, node) || len - i < 12)
        return false;
    for (int k = 0; k < 3; k++)
        w[k] = etf_get32(p + i + 4 * k);
    *at = i + 12;
    return true;
}

/* A NEWER_REFERENCE_EXT at p[*at], boxed in box as the decoder would
 * build it; one the decoder refuses is left to it. */
static bool peek_ref(const uint8_t *p, size_t len, size_t *at, const kiln_term *refs, size_t nrefs, kiln_term *box,
                     kiln_term *ref)
{
    size_t i = *at;
    if (len - i < 3 || p[i] != 90)
        return false;
    size_t n = etf_get16(p + i + 1);
    if (n == 0 || n > ETF_MAX_REF_WORDS)
        return false;
    i += 3;
    kiln_term node;
    if (!peek_atom(p, len, &i, refs, nrefs, &node) || len - i < 4 + 4 * n)
        return false;
    *ref = etf_ref_box(box, node, etf_get32(p + i), p + i + 4, n);
    *at = i + 4 + 4 * n;
    return true;
}

/* A NEW_PID_EXT at p[*at] as the decoder builds it: a local pid
 * immediate, any other boxed in box. */
static bool peek_any_pid(const uint8_t *p, size_t len, size_t *at, const kiln_term *refs, size_t nrefs,
                         const kiln_etf_ctx *ctx, kiln_term *box, kiln_term *pid)
{
    kiln_term node;
    uint32_t w[3];
    if (!peek_pid(p, len, at, refs, nrefs, &node, w))
        return false;
    *pid = node == ctx->node && w[2] == ctx->creation && w[1] <= 0x1FFFFFFFu ? kiln_local_pid(w[0], w[1])
                                                                               : etf_ext_pid_box(box, node, w[0], w[1], w[2]);
    return true;
}

/* After the header: {2, Unused, To} or {22, From, To}, To a pid of this
 * node (ctx); {33, From, Alias}; {19|20, From, To, Ref}, To a pid of
 * this node or a name, with nothing after it. *off moves past the
 * control tuple. */
static bool in_place(const uint8_t *p, size_t len, size_t *off, const kiln_term *refs, size_t nrefs,
                     const kiln_etf_decode_opts *opts, kiln_frame *out)
{
    size_t i = *off;
    const kiln_etf_ctx *ctx = opts->ctx;
    if (!ctx || ctx->node == KILN_NONE || len - i < 4 || p[i] != 104 || p[i + 2] != 97)
        return false;
    uint8_t arity = p[i + 1], op = p[i + 3];
    bool monitor = op == 19 || op == 20;
    if (monitor ? arity != 4 : arity != 3 || (op != 2 && op != 22 && op != 33))
        return false;
    i += 4;
    kiln_term node, from = KILN_NONE, to, ref = KILN_NONE;
    uint32_t w[3];
    if (op == 2 ? !peek_atom(p, len, &i, refs, nrefs, &node)
        : !monitor ? !peek_pid(p, len, &i, refs, nrefs, &node, w)
                   : !peek_any_pid(p, len, &i, refs, nrefs, ctx, out->pid_box, &from))
        return false;
    if (monitor && i < len && p[i] != 88) {
        if (!peek_atom(p, len, &i, refs, nrefs, &to))
            return false;
    } else if (op != 33) {
        /* The decoder's rule for a local pid. */
        if (!peek_pid(p, len, &i, refs, nrefs, &node, w) || node != ctx->node || w[2] != ctx->creation ||
            w[1] > 0x1FFFFFFFu)
            return false;
        to = kiln_local_pid(w[0], w[1]);
    }
    /* The alias, or the monitor's reference: both last in their tuple. */
    if (op == 33 || monitor) {
        if (!peek_ref(p, len, &i, refs, nrefs, out->ref_box, &ref))
            return false;
        if (op == 33) {
            to = ref;
            ref = KILN_NONE;
        }
    }
    /* A send without its message, or a monitor with something after it,
     * is left to the general way, which refuses it. */
    if (monitor ? i != len : i == len)
        return false;
    out->op = op;
    out->from = from;
    out->to = to;
    out->ref = ref;
    *off = i;
    return true;
}

static void frame_clear(kiln_frame *out)
{
    out->ctrl = out->msg = NULL;
    out->op = 0;
    out->to = out->from = out->ref = KILN_NONE;
}

int kiln_frame_parse(kiln_frame_state *s, const uint8_t *p, size_t len, const kiln_etf_decode_opts *opts,
                     kiln_frame *out)
{
    frame_clear(out);
    if (len >= 2 && p[0] == 131 && p[1] == 69)
        return first_fragment(s, p, len, opts, out);
    if (len >= 2 && p[0] == 131 && p[1] == 70)
        return next_fragment(s, p, len, opts, out, false);
    bool bare;
    size_t off, nrefs = 0;
    kiln_term refs[255];
    if (len >= 1 && p[0] == 'p') {
        bare = false;
        off = 1;
    } else if (len >= 2 && p[0] == 131 && p[1] == 68) {
        bare = true;
        off = 2;
        int rc = read_refs(s, p, len, &off, refs, &nrefs, opts);
        if (rc != KILN_OK)
            return rc;
    } else {
        return KILN_EPROTO;
    }
    size_t used = 0;
    if (bare && !s->no_fast_send && in_place(p, len, &off, refs, nrefs, opts, out)) {
        if (off == len)
            return KILN_OK; /* a monitor's: no message */
        int rc = decode(p + off, len - off, true, opts, refs, nrefs, &out->msg, &used);
        if (rc != KILN_OK)
            return rc;
        if (off + used != len) {
            kiln_frame_free(out);
            return KILN_ETRAILING;
        }
        return KILN_OK;
    }
    int rc = decode(p + off, len - off, bare, opts, refs, nrefs, &out->ctrl, &used);
    if (rc != KILN_OK)
        return rc;
    off += used;
    if (off < len) {
        rc = decode(p + off, len - off, bare, opts, refs, nrefs, &out->msg, &used);
        if (rc != KILN_OK) {
            kiln_frame_free(out);
            return rc;
        }
        off += used;
    }
    if (off != len) {
        kiln_frame_free(out);
        return KILN_ETRAILING;
    }
    return check(out);
}

bool kiln_frame_slice_room(kiln_frame_state *s, const uint8_t *hdr, size_t len, uint8_t **dst)
{
    if (len < 18 || hdr[0] != 131 || hdr[1] != 70)
        return false;
    struct kiln_frag_seq **link;
    struct kiln_frag_seq *q = find_seq(s, etf_get64(hdr + 2), &link);
    size_t slice = len - 18;
    /* Only where the slice fits as things stand: anything else (an error
     * too) takes kiln_frame_parse's way, which grows or refuses. */
    if (!q || etf_get64(hdr + 10) != q->expect || !q->bin || q->cap - q->len < slice ||
        s->pending_bytes + slice > MAX_PENDING)
        return false;
    *dst = kiln_bin_data(q->bin) + q->len;
    return true;
}

int kiln_frame_parse_placed(kiln_frame_state *s, const uint8_t *hdr, size_t len, const kiln_etf_decode_opts *opts,
                            kiln_frame *out)
{
    frame_clear(out);
    return next_fragment(s, hdr, len, opts, out, true);
}
