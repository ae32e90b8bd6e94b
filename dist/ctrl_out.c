/* Control messages to peers: the node's implementation of the runtime's
 * distribution operations (runtime/dist_hooks.h). Each operation becomes
 * frames encoded on the sender's own thread for what the connection
 * negotiated (brief §3): the pass-through form ('p', each term with its
 * 131) when neither FRAGMENTS nor DIST_HDR_ATOM_CACHE is agreed, else a
 * distribution header (with atom-cache refs when DIST_HDR_ATOM_CACHE is
 * agreed, none otherwise), and messages larger than the fragment size in
 * fragments. Only the header depends on the connection's atom cache, so
 * the terms are encoded without the node lock and the header is written
 * under it (atom_cache_out.h). */
#include <pthread.h>
#include <stddef.h>
#include <string.h>

#include "dist/etf_internal.h"
#include "dist/node_internal.h"
#include "runtime/alloc.h"
#include "runtime/dist_hooks.h"
#include "runtime/rt.h"
#include "runtime/term_layout.h"
#include "runtime/tls.h"

enum dop {
    DOP_LINK = 1, DOP_SEND = 2, DOP_EXIT = 3, DOP_REG_SEND = 6, DOP_EXIT2 = 8, DOP_MONITOR_P = 19,
    DOP_DEMONITOR_P = 20, DOP_MONITOR_P_EXIT = 21, DOP_ALIAS_SEND = 33, DOP_UNLINK_ID = 35
};

/* Each thread's encoder, reused for every term it sends: a new one per
 * term cost an allocation for the encoder and a few more while its buffer
 * grew, for every control term and message. And its atom-cache refs
 * (5 KB), lent from a kiln_frames_prepare to the finish or discard that
 * follows it on the same thread (no process switch comes between). Freed
 * when the thread ends. */
static KILN_TLS struct {
    kiln_etf_enc *enc;
    kiln_out_refs *refs;
    bool refs_lent, keyed;
} tl;
#define ENC_KEEP (64 << 10) /* buffer bytes it keeps between terms */
static pthread_key_t tl_key;
static pthread_once_t tl_once = PTHREAD_ONCE_INIT;

static void tl_free(void *unused)
{
    (void)unused;
    kiln_etf_enc_free(tl.enc);
    kiln_free(tl.refs);
    tl.enc = NULL;
    tl.refs = NULL;
}

static void tl_key_init(void) { (void)pthread_key_create(&tl_key, tl_free); }

/* The thread's state is freed at its exit only once this succeeded. */
static bool tl_keyed(void)
{
    if (!tl.keyed) {
        pthread_once(&tl_once, tl_key_init);
        tl.keyed = pthread_setspecific(tl_key, &tl) == 0;
    }
    return tl.keyed;
}

/* Empty refs: the thread's own (kept empty between lendings, which is
 * cheaper than emptying 256 bytes of slot bits each time), or a new one
 * when they are lent already. */
static kiln_out_refs *refs_take(bool *lent)
{
    *lent = false;
    if (!tl.refs_lent && !tl.refs && tl_keyed() && (tl.refs = kiln_malloc(sizeof(kiln_out_refs))))
        kiln_out_refs_init(tl.refs);
    if (!tl.refs_lent && tl.refs) {
        tl.refs_lent = *lent = true;
        return tl.refs;
    }
    kiln_out_refs *r = kiln_malloc(sizeof(kiln_out_refs));
    if (r)
        kiln_out_refs_init(r);
    return r;
}

static void refs_give_back(kiln_out_refs *r, bool lent)
{
    if (lent) {
        kiln_out_refs_clear(r);
        tl.refs_lent = false;
    } else {
        kiln_free(r);
    }
}

/* This thread's encoder holding one term, bare (inside a header) or whole
 * (with its 131); with refs, its atoms go into them as cache refs. NULL on
 * failure. The caller takes what it needs before the next encode. */
static kiln_etf_enc *encode(kiln_node *n, kiln_term t, bool whole, kiln_out_refs *refs)
{
    kiln_etf_enc_opts o = {.ctx = &n->ctx, .minor_version = 2};
    kiln_etf_enc *e = tl.enc;
    if (!e) {
        if (!tl_keyed() || !(e = kiln_etf_enc_new(&o)))
            return NULL;
        tl.enc = e;
    } else if (!etf_enc_reuse(e, &o)) {
        return NULL;
    }
    if (refs)
        etf_enc_set_refs(e, refs);
    if ((whole ? kiln_etf_enc_whole(e, t) : kiln_etf_enc_term(e, t)) != KILN_OK)
        return NULL;
    return e;
}

/* The message term, encoded in e, as pieces (struct kiln_frames). */
static int encode_pieces(kiln_etf_enc *e, kiln_frames *f)
{
    int rc = KILN_OK;
    size_t own = 0;
    struct etf_piece one, *pc = &one;
    f->mlen = kiln_etf_enc_size(e);
    size_t np = etf_enc_pieces(e, &one, 1);
    if (f->mlen > KILN_DIST_MAX_FRAME)
        rc = KILN_ENOMEM;
    else if (np > 1 && !(pc = kiln_malloc(np * sizeof *pc)))
        rc = KILN_ENOMEM;
    else if (np > 1)
        etf_enc_pieces(e, pc, np);
    if (rc == KILN_OK && !(f->mp = kiln_calloc(np ? np : 1, sizeof *f->mp)))
        rc = KILN_ENOMEM;
    kiln_bin *b = NULL;
    if (rc == KILN_OK) {
        for (size_t i = 0; i < np; i++)
            own += pc[i].blob ? 0 : pc[i].len;
        if (!(b = kiln_bin_alloc(own ? own : 1)))
            rc = KILN_ENOMEM;
    }
    if (rc == KILN_OK) {
        size_t at = 0;
        for (size_t i = 0; i < np; i++) {
            struct kiln_piece *q = &f->mp[f->nmp++];
            if (pc[i].blob) {
                kiln_bin_incref(pc[i].blob);
                *q = (struct kiln_piece){pc[i].blob, (size_t)(pc[i].data - kiln_bin_data(pc[i].blob)), pc[i].len};
            } else {
                memcpy(kiln_bin_data(b) + at, pc[i].data, pc[i].len);
                kiln_bin_incref(b);
                *q = (struct kiln_piece){b, at, pc[i].len};
                at += pc[i].len;
            }
        }
        kiln_bin_decref(b); /* the pieces hold it */
    }
    if (pc != &one)
        kiln_free(pc);
    etf_enc_trim(e, ENC_KEEP); /* the pieces hold their own references */
    return rc;
}

static void put32(uint8_t *d, uint64_t v)
{
    d[0] = (uint8_t)(v >> 24);
    d[1] = (uint8_t)(v >> 16);
    d[2] = (uint8_t)(v >> 8);
    d[3] = (uint8_t)v;
}

static void put64(uint8_t *d, uint64_t v)
{
    put32(d, v >> 32);
    put32(d + 4, v);
}

/* Body pieces a frame may reference; a slice over more is copied into one
 * blob instead (the writer wants few iovecs per frame, conn.c). */
#define FRAME_PIECES 3

/* One frame: head bytes (copied) then bytes [off, off+len) of the message
 * (shared), as an iolist the writer hands to the kernel without copying
 * the message. */
static kiln_msg *frame_msg(const uint8_t *head, size_t hlen, const kiln_frames *f, size_t off, size_t len)
{
    kiln_msg *m = kiln_msg_new(hlen + 64 + FRAME_PIECES * 64);
    if (!m)
        return NULL;
    kiln_term parts[1 + FRAME_PIECES];
    size_t k = 0;
    parts[k++] = kiln_binary(m, head, hlen);
    /* The pieces under [off, off+len). */
    size_t first = 0, at = 0;
    while (first < f->nmp && at + f->mp[first].len <= off)
        at += f->mp[first++].len;
    size_t last = first, end = at;
    while (last < f->nmp && end < off + len)
        end += f->mp[last++].len;
    /* Each piece's part of the slice is referenced; over FRAME_PIECES
     * of them, copied into one blob instead. */
    bool copy = len && last - first > FRAME_PIECES;
    kiln_bin *b = copy ? kiln_bin_alloc(len) : NULL;
    size_t pos = at, w = 0;
    for (size_t i = first; i < last && (b || !copy); i++) {
        const struct kiln_piece *q = &f->mp[i];
        size_t lo = off > pos ? off - pos : 0, hi = off + len < pos + q->len ? off + len - pos : q->len;
        pos += q->len;
        if (hi <= lo)
            continue;
        if (copy) {
            memcpy(kiln_bin_data(b) + w, kiln_bin_data(q->bin) + q->off + lo, hi - lo);
            w += hi - lo;
        } else {
            parts[k++] = kiln_binary_from_bin(m, q->bin, q->off + lo, hi - lo);
        }
    }
    if (copy) {
        parts[k++] = b ? kiln_binary_from_bin(m, b, 0, len) : KILN_NONE;
        if (b)
            kiln_bin_decref(b);
    }
    kiln_term t = KILN_NONE;
    bool ok = true;
    for (size_t i = 0; i < k; i++)
        ok = ok && !kiln_is_none(parts[i]);
    if (ok)
        t = kiln_list_v(m, k, parts, KILN_NIL);
    if (kiln_is_none(t)) {
        kiln_msg_free(m);
        return NULL;
    }
    kiln_msg_set_term(m, t);
    return m;
}

static void chain(kiln_msg **head, kiln_msg **tail, kiln_msg *m)
{
    atomic_store_explicit(&m->next, NULL, memory_order_relaxed);
    if (*tail)
        atomic_store_explicit(&(*tail)->next, m, memory_order_relaxed);
    else
        *head = m;
    *tail = m;
}

void kiln_frames_discard(kiln_frames *f)
{
    if (f->cb)
        kiln_bin_decref(f->cb);
    for (size_t i = 0; i < f->nmp; i++)
        kiln_bin_decref(f->mp[i].bin);
    if (f->mp) /* jemalloc's free(NULL) is no quicker than a free */
        kiln_free(f->mp);
    if (f->refs)
        refs_give_back(f->refs, f->refs_lent);
    memset(f, 0, offsetof(kiln_frames, small));
}

/* Largest frame built whole on the stack (header with its refs, control
 * term, message). */
#define SMALL_FRAME 512

/* The most a one-frame message's length and header can take. */
static size_t head_max(const kiln_frames *f, bool header)
{
    return 4 + (f->refs ? 2 + f->refs->max_header : header ? 3 : 1);
}

/* The control term's bytes into a blob of their own, if they wait in
 * f->small. */
static int ctrl_to_blob(kiln_frames *f)
{
    if (f->cb)
        return KILN_OK;
    if (!(f->cb = kiln_bin_alloc(f->clen ? f->clen : 1)))
        return KILN_ENOMEM;
    memcpy(kiln_bin_data(f->cb), f->small, f->clen);
    return KILN_OK;
}

int kiln_frames_prepare(kiln_node *n, uint64_t flags, kiln_term ctrl, kiln_term msg, kiln_frames *f)
{
    memset(f, 0, offsetof(kiln_frames, small));
    f->flags = flags;
    bool header = (flags & (KILN_DFLAG_DIST_HDR_ATOM_CACHE | KILN_DFLAG_FRAGMENTS)) != 0;
    if (flags & KILN_DFLAG_DIST_HDR_ATOM_CACHE) {
        if (!(f->refs = refs_take(&f->refs_lent)))
            return KILN_ENOMEM;
    }
    /* A small control term waits in f->small for the message: if both fit
     * (and the message holds no shared binary), the frame needs no blob,
     * piece array or second copy at all (one-way K->K: most of the
     * sender's allocations per message). */
    kiln_etf_enc *e = encode(n, ctrl, !header, f->refs);
    if (!e)
        goto fail;
    f->clen = kiln_etf_enc_size(e);
    if (f->clen <= sizeof f->small) {
        kiln_etf_enc_copy(e, f->small);
    } else {
        if (f->clen > KILN_DIST_MAX_FRAME || !(f->cb = kiln_bin_alloc(f->clen)))
            goto fail;
        kiln_etf_enc_copy(e, kiln_bin_data(f->cb));
    }
    /* Not trimmed before the message's encode: that one starts with a
     * reset, and the trim after it frees what either made big. */
    if (!kiln_is_none(msg)) {
        if (!(e = encode(n, msg, !header, f->refs)))
            goto fail;
        size_t mlen = kiln_etf_enc_size(e);
        struct etf_piece one;
        size_t np = etf_enc_pieces(e, &one, 1);
        if (!f->cb && np <= 1 && !(np && one.blob) && f->clen + mlen <= sizeof f->small && mlen <= n->frag_size &&
            head_max(f, header) + f->clen + mlen <= SMALL_FRAME) {
            kiln_etf_enc_copy(e, f->small + f->clen);
            f->mlen = mlen;
            f->is_small = true;
            etf_enc_trim(e, ENC_KEEP);
            return KILN_OK;
        }
        if (ctrl_to_blob(f) != KILN_OK)
            goto fail;
        if (encode_pieces(e, f) != KILN_OK)
            goto fail;
        return KILN_OK;
    }
    etf_enc_trim(e, ENC_KEEP);
    f->is_small = !f->cb && head_max(f, header) + f->clen <= SMALL_FRAME;
    if (!f->is_small && ctrl_to_blob(f) != KILN_OK)
        goto fail;
    return KILN_OK;
fail:
    if (tl.enc)
        etf_enc_trim(tl.enc, ENC_KEEP);
    kiln_frames_discard(f);
    return KILN_ENOMEM;
}

/* The header's atom-cache part into d: refs against the cache, or none. */
static size_t put_refs(kiln_frames *f, kiln_out_cache *cache, uint8_t *d)
{
    if (!f->refs) {
        d[0] = 0;
        return 1;
    }
    return kiln_out_refs_header(f->refs, cache, d);
}

/* A one-frame message's length and header ('p', or 131,68 and the refs)
 * into d, for a body of blen bytes after them; the header's length. */
static size_t put_head(kiln_frames *f, kiln_out_cache *cache, bool header, uint8_t *d, size_t blen)
{
    size_t hl;
    if (header) {
        d[4] = 131;
        d[5] = 68;
        hl = 2 + put_refs(f, cache, d + 6);
    } else {
        d[4] = 'p';
        hl = 1;
    }
    put32(d, hl + blen);
    return hl;
}

kiln_msg *kiln_frames_finish(kiln_node *n, kiln_frames *f, kiln_out_cache *cache)
{
    uint64_t flags = f->flags;
    bool header = (flags & (KILN_DFLAG_DIST_HDR_ATOM_CACHE | KILN_DFLAG_FRAGMENTS)) != 0;
    size_t clen = f->clen, mlen = f->mlen, maxrefs = f->refs ? f->refs->max_header : 1;
    kiln_bin *cb = f->cb;
    kiln_msg *head = NULL, *tail = NULL;
    size_t frag = n->frag_size;
    if (f->refs && !cache)
        goto out; /* refs against no cache would go stale: a caller's bug */
    if (f->is_small) {
        uint8_t fb[SMALL_FRAME];
        size_t hl = put_head(f, cache, header, fb, clen + mlen);
        memcpy(fb + 4 + hl, f->small, clen + mlen);
        size_t total = 4 + hl + clen + mlen;
        kiln_msg *m = kiln_msg_new(total + 64);
        kiln_term b = m ? kiln_binary_in_arena(m, fb, total) : KILN_NONE;
        kiln_term t = kiln_is_none(b) ? KILN_NONE : kiln_list_v(m, 1, &b, KILN_NIL);
        if (kiln_is_none(t)) {
            kiln_msg_free(m);
            goto out;
        }
        kiln_msg_set_term(m, t);
        chain(&head, &tail, m);
        goto out;
    }
    if (!header || !(flags & KILN_DFLAG_FRAGMENTS) || mlen <= frag) {
        /* One frame: 'p' + whole terms, or 131,68, refs + bare terms. */
        uint8_t h[8 + 64];
        size_t room = 4 + 2 + maxrefs + clen;
        uint8_t *hb = room <= sizeof h ? h : kiln_malloc(room);
        if (!hb)
            goto out;
        size_t hl = put_head(f, cache, header, hb, clen + mlen);
        memcpy(hb + 4 + hl, kiln_bin_data(cb), clen);
        kiln_msg *m = frame_msg(hb, 4 + hl + clen, f, 0, mlen);
        if (hb != h)
            kiln_free(hb);
        if (m)
            chain(&head, &tail, m);
        goto out;
    }
    /* Fragments (brief §3): the header (with the atom-cache refs) and the
     * whole control term go in the first one with the first slice; the
     * rest carry slices, their FragIds counting down to 1. Small messages
     * from others may go out between them. SeqId 0 is never used: erl 25
     * crashes on it. */
    uint64_t count = (mlen + frag - 1) / frag, seq = atomic_fetch_add(&n->frag_seq, 1) + 1;
    uint8_t *hb = kiln_malloc(4 + 18 + maxrefs + clen);
    if (!hb)
        goto out;
    size_t sl = frag;
    hb[4] = 131;
    hb[5] = 69;
    put64(hb + 6, seq);
    put64(hb + 14, count);
    size_t hl = 18 + put_refs(f, cache, hb + 22);
    put32(hb, hl + clen + sl);
    memcpy(hb + 4 + hl, kiln_bin_data(cb), clen);
    kiln_msg *m = frame_msg(hb, 4 + hl + clen, f, 0, sl);
    kiln_free(hb);
    if (!m)
        goto out;
    chain(&head, &tail, m);
    for (uint64_t id = count - 1, off = sl; id >= 1; id--, off += sl) {
        sl = mlen - off < frag ? mlen - off : frag;
        uint8_t c[4 + 18];
        put32(c, 18 + sl);
        c[4] = 131;
        c[5] = 70;
        put64(c + 6, seq);
        put64(c + 14, id);
        m = frame_msg(c, sizeof c, f, off, sl);
        if (!m) {
            /* A sequence cut short must not go out at all. */
            while (head) {
                kiln_msg *next = atomic_load_explicit(&head->next, memory_order_relaxed);
                kiln_msg_free(head);
                head = next;
            }
            goto out;
        }
        chain(&head, &tail, m);
    }
out:
    if (!head && f->refs && cache) {
        /* The header may have marked atoms as sent that never will be:
         * forget those slots, so they go with their text next time. */
        for (size_t i = 0; i < f->refs->n; i++)
            cache->slot[f->refs->slot[i]] = 0;
    }
    kiln_frames_discard(f);
    return head;
}

kiln_msg *kiln_frames_encode(kiln_node *n, uint64_t flags, kiln_out_cache *cache, kiln_term ctrl, kiln_term msg)
{
    kiln_frames f;
    if (kiln_frames_prepare(n, flags, ctrl, msg, &f) != KILN_OK)
        return NULL;
    return kiln_frames_finish(n, &f, cache);
}

/* A pid to stand for "from" when a foreign thread sends: OTP wants a pid
 * of this node in REG_SEND and exit signals. */
static kiln_term from_or_node(kiln_node *n, kiln_term from)
{
    return kiln_is_none(from) ? n->net_kernel : from;
}

static int out(kiln_node *n, kiln_term peer, kiln_msg *scratch, kiln_term ctrl, kiln_term msg)
{
    int rc = kiln_is_none(ctrl) ? KILN_ENOMEM : kiln_dist_out(n, peer, ctrl, msg);
    kiln_msg_free(scratch);
    return rc;
}

/* A control tuple in box (room for 1 + arity words), which the caller
 * keeps on its stack: the tuple lives only while kiln_dist_out encodes it
 * (or copies it, when the connection is not up yet), and a message to hold
 * it was an allocation, a free and a variadic kiln_tuple per signal, three
 * times per remote call. KILN_NONE if an element is, as kiln_tuple. */
static kiln_term ctrl_tuple(kiln_term *box, size_t arity, const kiln_term *el)
{
    box[0] = kiln_make_header(arity, KILN_SUB_TUPLE);
    bool bad = false;
    for (size_t i = 0; i < arity; i++) {
        bad |= el[i] == KILN_NONE;
        box[1 + i] = el[i];
    }
    return bad ? KILN_NONE : kiln_box_term(box);
}

static kiln_term ref_node(kiln_term ref)
{
    kiln_term node;
    uint32_t creation, w[KILN_REF_MAX_WORDS];
    size_t nw = KILN_REF_MAX_WORDS;
    return kiln_get_ref(ref, &node, &creation, w, &nw) == KILN_OK ? node : KILN_NONE;
}

static int op_send(void *ctx, kiln_term from, kiln_term to, kiln_msg *msg)
{
    kiln_node *n = ctx;
    kiln_term box[5], ctrl = KILN_NONE, peer = KILN_NONE;
    if (kiln_is_pid(to)) {
        peer = kiln_pid_node(to);
        ctrl = ctrl_tuple(box, 3, (kiln_term[]){kiln_small(DOP_SEND), n->empty_atom, to});
    } else if (kiln_is_tuple(to)) {
        peer = kiln_tuple_get(to, 1);
        ctrl = ctrl_tuple(box, 4,
                          (kiln_term[]){kiln_small(DOP_REG_SEND), from_or_node(n, from), n->empty_atom,
                                        kiln_tuple_get(to, 0)});
    } else if (kiln_is_ref(to)) {
        peer = ref_node(to);
        ctrl = ctrl_tuple(box, 3, (kiln_term[]){kiln_small(DOP_ALIAS_SEND), from_or_node(n, from), to});
    }
    int rc = kiln_is_none(peer) ? KILN_EBADARG : out(n, peer, NULL, ctrl, kiln_msg_term(msg));
    kiln_msg_free(msg);
    return rc;
}

static int op_link(void *ctx, kiln_term from, kiln_term to)
{
    kiln_node *n = ctx;
    kiln_term box[4];
    kiln_term ctrl = ctrl_tuple(box, 3, (kiln_term[]){kiln_small(DOP_LINK), from, to});
    return out(n, kiln_pid_node(to), NULL, ctrl, KILN_NONE);
}

static int op_unlink(void *ctx, kiln_term from, kiln_term to)
{
    kiln_node *n = ctx;
    kiln_msg *s = kiln_msg_new(64); /* the id may be a bignum */
    uint64_t id = atomic_fetch_add(&n->unlink_ids, 1);
    kiln_term ctrl = s ? kiln_tuple(s, 4, kiln_small(DOP_UNLINK_ID), kiln_uint(s, id), from, to) : KILN_NONE;
    return out(n, kiln_pid_node(to), s, ctrl, KILN_NONE);
}

static int op_exit(void *ctx, kiln_term from, kiln_term to, kiln_term reason, bool exit2)
{
    kiln_node *n = ctx;
    kiln_term box[5];
    kiln_term ctrl =
        ctrl_tuple(box, 4, (kiln_term[]){kiln_small(exit2 ? DOP_EXIT2 : DOP_EXIT), from_or_node(n, from), to, reason});
    return out(n, kiln_pid_node(to), NULL, ctrl, KILN_NONE);
}

static int op_monitor(void *ctx, kiln_term from, kiln_term target, kiln_term node, kiln_term ref)
{
    kiln_node *n = ctx;
    kiln_term box[5];
    kiln_term ctrl = ctrl_tuple(box, 4, (kiln_term[]){kiln_small(DOP_MONITOR_P), from, target, ref});
    return out(n, node, NULL, ctrl, KILN_NONE);
}

static int op_demonitor(void *ctx, kiln_term from, kiln_term target, kiln_term node, kiln_term ref)
{
    kiln_node *n = ctx;
    kiln_term box[5];
    kiln_term ctrl = ctrl_tuple(box, 4, (kiln_term[]){kiln_small(DOP_DEMONITOR_P), from, target, ref});
    return out(n, node, NULL, ctrl, KILN_NONE);
}

static int op_down(void *ctx, kiln_term what, kiln_term watcher, kiln_term ref, kiln_term reason)
{
    kiln_node *n = ctx;
    kiln_term box[6];
    kiln_term ctrl = ctrl_tuple(box, 5, (kiln_term[]){kiln_small(DOP_MONITOR_P_EXIT), what, watcher, ref, reason});
    return out(n, kiln_pid_node(watcher), NULL, ctrl, KILN_NONE);
}

static void op_involve(void *ctx, kiln_term node, kiln_term pid)
{
    kiln_node *n = ctx;
    /* A link or monitor may come before any traffic: connect now, so the
     * process hears noconnection if the node cannot be reached. */
    struct kiln_conn *c = kiln_conn_get(n, node, true);
    if (!c) {
        kiln_dist_in_nodedown(n->rt, node, pid);
        return;
    }
    for (size_t i = 0; i < c->ninvolved; i++) {
        if (c->involved[i] == pid) {
            pthread_mutex_unlock(&n->lock);
            return;
        }
    }
    if (c->ninvolved == c->capinvolved) {
        size_t cap = c->capinvolved ? c->capinvolved * 2 : 8;
        kiln_term *v = kiln_realloc(c->involved, cap * sizeof(*v));
        if (!v) {
            pthread_mutex_unlock(&n->lock);
            return;
        }
        c->involved = v;
        c->capinvolved = cap;
    }
    c->involved[c->ninvolved++] = pid;
    pthread_mutex_unlock(&n->lock);
}

const struct kiln_dist_ops kiln_node_dist_ops = {
    .send = op_send,
    .link = op_link,
    .unlink = op_unlink,
    .exit = op_exit,
    .monitor = op_monitor,
    .demonitor = op_demonitor,
    .down = op_down,
    .involve = op_involve,
};
