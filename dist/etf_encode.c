/* ETF encoder: terms to bytes in a reusable buffer, large refcounted
 * binaries referenced as their own iovecs rather than copied.
 *
 * The walk keeps an explicit stack of open containers (a container whose
 * last child is being written is popped first), so deep terms and long
 * lists never recurse on the C stack. */
#include <stdio.h>
#include <string.h>

#include "dist/atom_cache_out.h"
#include "dist/etf_internal.h"
#include "runtime/alloc.h"

/* Room for the local node's encoded atom (a 3-byte header and up to 61
 * bytes of name: longer names take the general path). */
#define NODE_ENC_MAX 64

/* A piece of output: bytes of our buffer, or a borrowed binary. */
struct seg {
    const uint8_t *ext; /* NULL: buffer bytes [off, off+len) */
    size_t off, len;
};

enum eframe_kind { EF_TUPLE, EF_MAP, EF_LIST };

struct eframe {
    kiln_term t; /* tuple or map; for a list, the next cons */
    size_t i, n;
    uint8_t kind;
};

struct kiln_etf_enc {
    kiln_etf_enc_opts o;
    kiln_term node;
    uint32_t creation;
    /* The local node's atom as put_atom writes it (node_enc_len 0: not yet
     * known, or too long): every local pid carries it. */
    uint8_t node_enc[NODE_ENC_MAX];
    size_t node_enc_len;
    /* The distribution's atom cache, looked up inline (etf_enc_set_refs);
     * NULL: none, or o.atom_ref's. */
    kiln_out_refs *refs;
    kiln_term last_atom; /* put_atom's memo (0: none) */
    uint8_t last_enc[16];
    size_t last_len;
    uint8_t *buf;
    size_t len, cap;
    size_t seg_start; /* start of the buffer bytes not yet in segs */
    struct seg *segs;
    size_t nsegs, segcap;
    struct iovec *iov;
    size_t iovcap;
    kiln_bin **bins; /* references we hold for borrowed binaries */
    size_t nbins, bincap;
    /* Bytes handed out by reference; the output is len + these. Not a
     * running total kept on every append: that was a second read-modify-
     * write of memory per append, on the critical path (a small tuple
     * took a quarter less time without it). */
    size_t borrowed;
    struct eframe *st;
    size_t sp, stcap;
};

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return KILN_OK;
    size_t ncap = *cap ? *cap : 16;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2 / elem)
            return KILN_ENOMEM;
        ncap *= 2;
    }
    void *np = kiln_realloc(*p, ncap * elem);
    if (!np)
        return KILN_ENOMEM;
    *p = np;
    *cap = ncap;
    return KILN_OK;
}

/* Room for n more bytes; the caller advances e->len. */
static uint8_t *reserve(kiln_etf_enc *e, size_t n)
{
    if (n > SIZE_MAX - e->len)
        return NULL;
    void *b = e->buf;
    if (grow(&b, &e->cap, e->len + n, 1) != KILN_OK)
        return NULL;
    e->buf = b;
    return e->buf + e->len;
}

/* Headers are written straight into the buffer: built in a byte array on
 * the stack and copied, their bytes were read back as a word before the
 * byte stores had landed (a store-forwarding stall on every header). All
 * of these are inline, so that small constant-size puts become plain
 * stores (a memcpy call each showed as a fifth of small-term encoding). */
static inline uint8_t *room(kiln_etf_enc *e, size_t n)
{
    return e->cap - e->len < n ? reserve(e, n) : e->buf + e->len;
}

static inline void advance(kiln_etf_enc *e, size_t n) { e->len += n; }

/* n <= 16 bytes with two overlapping loads and stores of the widest size
 * that fits, reading nothing outside src[0..n): a call to memcpy cost more
 * than the copy for a small binary's few bytes. */
static inline void copy_small(uint8_t *dst, const uint8_t *src, size_t n)
{
    if (n >= 8) {
        uint64_t a, b;
        memcpy(&a, src, 8);
        memcpy(&b, src + n - 8, 8);
        memcpy(dst, &a, 8);
        memcpy(dst + n - 8, &b, 8);
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, src, 4);
        memcpy(&b, src + n - 4, 4);
        memcpy(dst, &a, 4);
        memcpy(dst + n - 4, &b, 4);
    } else if (n > 0) {
        dst[0] = src[0];
        dst[n / 2] = src[n / 2];
        dst[n - 1] = src[n - 1];
    }
}

static inline int put(kiln_etf_enc *e, const void *bytes, size_t n)
{
    uint8_t *w = room(e, n);
    if (!w)
        return KILN_ENOMEM;
    if (n <= 16)
        copy_small(w, bytes, n);
    else
        memcpy(w, bytes, n);
    advance(e, n);
    return KILN_OK;
}

static inline int put1(kiln_etf_enc *e, uint8_t b)
{
    uint8_t *w = room(e, 1);
    if (!w)
        return KILN_ENOMEM;
    w[0] = b;
    advance(e, 1);
    return KILN_OK;
}

static inline int put2(kiln_etf_enc *e, uint8_t a, uint8_t b)
{
    uint8_t *w = room(e, 2);
    if (!w)
        return KILN_ENOMEM;
    w[0] = a;
    w[1] = b;
    advance(e, 2);
    return KILN_OK;
}

static inline int put_tag32(kiln_etf_enc *e, uint8_t tag, uint32_t v)
{
    uint8_t *w = room(e, 5);
    if (!w)
        return KILN_ENOMEM;
    w[0] = tag;
    etf_put32(w + 1, v);
    advance(e, 5);
    return KILN_OK;
}

static int add_seg(kiln_etf_enc *e, const uint8_t *ext, size_t off, size_t len)
{
    void *s = e->segs;
    if (grow(&s, &e->segcap, e->nsegs + 1, sizeof(struct seg)) != KILN_OK)
        return KILN_ENOMEM;
    e->segs = s;
    e->segs[e->nsegs++] = (struct seg){ext, off, len};
    return KILN_OK;
}

/* Hands len bytes of blob b out as their own iovec, holding a reference. */
static int put_borrowed(kiln_etf_enc *e, kiln_bin *b, const uint8_t *data, size_t len)
{
    void *bp = e->bins;
    if (grow(&bp, &e->bincap, e->nbins + 1, sizeof(kiln_bin *)) != KILN_OK)
        return KILN_ENOMEM;
    e->bins = bp;
    /* Close the open buffer piece, then the borrowed one (two slots). */
    void *s = e->segs;
    if (grow(&s, &e->segcap, e->nsegs + 2, sizeof(struct seg)) != KILN_OK)
        return KILN_ENOMEM;
    e->segs = s;
    if (e->len > e->seg_start)
        add_seg(e, NULL, e->seg_start, e->len - e->seg_start);
    add_seg(e, data, 0, len);
    e->seg_start = e->len;
    kiln_bin_incref(b);
    e->bins[e->nbins++] = b;
    e->borrowed += len;
    return KILN_OK;
}

/* Options into e; false if the local node atom cannot be made. */
static bool set_opts(kiln_etf_enc *e, const kiln_etf_enc_opts *opts)
{
    kiln_term node0 = e->node;
    int minor0 = e->o.minor_version;
    if (opts) {
        e->o = *opts;
    } else {
        e->o = (kiln_etf_enc_opts){0};
        e->o.minor_version = 1;
    }
    if (!e->o.iov_threshold)
        e->o.iov_threshold = KILN_ETF_DEFAULT_IOV_THRESHOLD;
    e->node = etf_ctx_node(e->o.ctx);
    e->creation = etf_ctx_creation(e->o.ctx);
    e->o.ctx = NULL; /* copied out: the caller's struct need not outlive us */
    if (e->node != node0 || e->o.minor_version != minor0)
        e->node_enc_len = 0; /* the node's name is spelled differently now */
    e->last_atom = 0;         /* and the options may spell atoms differently */
    e->refs = NULL;
    return e->node != KILN_NONE;
}

void etf_enc_set_refs(kiln_etf_enc *e, kiln_out_refs *refs)
{
    e->refs = refs;
    e->last_atom = 0;
}

kiln_etf_enc *kiln_etf_enc_new(const kiln_etf_enc_opts *opts)
{
    kiln_etf_enc *e = kiln_calloc(1, sizeof *e);
    if (!e)
        return NULL;
    if (!set_opts(e, opts)) {
        kiln_free(e);
        return NULL;
    }
    return e;
}

bool etf_enc_reuse(kiln_etf_enc *e, const kiln_etf_enc_opts *opts)
{
    kiln_etf_enc_reset(e);
    /* A thread's encoder gets the same options term after term: then
     * there is nothing to copy or to forget (the memo's spelling stands). */
    if (opts && opts->ctx && opts->ctx->node == e->node && opts->ctx->creation == e->creation &&
        opts->minor_version == e->o.minor_version && opts->atom_ref == e->o.atom_ref &&
        opts->atom_ref_arg == e->o.atom_ref_arg &&
        (opts->iov_threshold ? opts->iov_threshold : KILN_ETF_DEFAULT_IOV_THRESHOLD) == e->o.iov_threshold) {
        e->refs = NULL;
        return true;
    }
    return set_opts(e, opts);
}

/* An array of cap elements, or NULL if it is over keep bytes (freed). */
static void *drop_big(void *p, size_t *cap, size_t elem, size_t keep)
{
    if (*cap * elem <= keep)
        return p;
    kiln_free(p);
    *cap = 0;
    return NULL;
}

void etf_enc_trim(kiln_etf_enc *e, size_t keep)
{
    kiln_etf_enc_reset(e);
    e->buf = drop_big(e->buf, &e->cap, 1, keep);
    e->segs = drop_big(e->segs, &e->segcap, sizeof *e->segs, keep);
    e->iov = drop_big(e->iov, &e->iovcap, sizeof *e->iov, keep);
    e->bins = drop_big(e->bins, &e->bincap, sizeof *e->bins, keep);
    e->st = drop_big(e->st, &e->stcap, sizeof *e->st, keep);
}

static void drop_bins(kiln_etf_enc *e, size_t keep)
{
    while (e->nbins > keep)
        kiln_bin_decref(e->bins[--e->nbins]);
}

void kiln_etf_enc_reset(kiln_etf_enc *e)
{
    if (!e)
        return;
    if (e->nbins)
        drop_bins(e, 0);
    e->len = e->seg_start = e->nsegs = e->borrowed = 0;
}

void kiln_etf_enc_free(kiln_etf_enc *e)
{
    if (!e)
        return;
    drop_bins(e, 0);
    kiln_free(e->buf);
    kiln_free(e->segs);
    kiln_free(e->iov);
    kiln_free(e->bins);
    kiln_free(e->st);
    kiln_free(e);
}

int kiln_etf_enc_raw(kiln_etf_enc *e, const void *bytes, size_t len)
{
    if (!e || (!bytes && len))
        return KILN_EINVAL;
    return put(e, bytes, len);
}

size_t kiln_etf_enc_size(const kiln_etf_enc *e) { return e ? e->len + e->borrowed : 0; }

const struct iovec *kiln_etf_enc_iov(kiln_etf_enc *e, size_t *n)
{
    size_t k = e->nsegs + (e->len > e->seg_start ? 1 : 0);
    if (k >= e->iovcap) {
        void *p = e->iov;
        if (grow(&p, &e->iovcap, k ? k : 1, sizeof(struct iovec)) != KILN_OK) {
            *n = 0;
            return NULL;
        }
        e->iov = p;
    }
    for (size_t i = 0; i < e->nsegs; i++) {
        const struct seg *s = &e->segs[i];
        e->iov[i].iov_base = (void *)(uintptr_t)(s->ext ? s->ext : e->buf + s->off);
        e->iov[i].iov_len = s->len;
    }
    if (e->len > e->seg_start) {
        e->iov[e->nsegs].iov_base = e->buf + e->seg_start;
        e->iov[e->nsegs].iov_len = e->len - e->seg_start;
    }
    *n = k;
    return e->iov;
}

size_t etf_enc_pieces(const kiln_etf_enc *e, struct etf_piece *out, size_t max)
{
    size_t k = 0, b = 0; /* borrowed segments took bins[] in order */
    for (size_t i = 0; i < e->nsegs; i++, k++) {
        const struct seg *s = &e->segs[i];
        if (k < max)
            out[k] = s->ext ? (struct etf_piece){s->ext, s->len, e->bins[b]}
                            : (struct etf_piece){e->buf + s->off, s->len, NULL};
        if (s->ext)
            b++;
    }
    if (e->len > e->seg_start) {
        if (k < max)
            out[k] = (struct etf_piece){e->buf + e->seg_start, e->len - e->seg_start, NULL};
        k++;
    }
    return k;
}

void kiln_etf_enc_copy(const kiln_etf_enc *e, void *dst)
{
    uint8_t *w = dst;
    for (size_t i = 0; i < e->nsegs; i++) {
        const struct seg *s = &e->segs[i];
        memcpy(w, s->ext ? s->ext : e->buf + s->off, s->len);
        w += s->len;
    }
    if (e->len > e->seg_start) {
        memcpy(w, e->buf + e->seg_start, e->len - e->seg_start);
    }
}

/* ---------- leaves ---------- */

/* UTF-8 text that is all code points below 256, as Latin-1; false if not. */
static bool to_latin1(const char *s, size_t n, uint8_t *out, size_t *outn)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)s[i];
        if (b < 0x80) {
            out[o++] = b;
        } else if ((b == 0xC2 || b == 0xC3) && i + 1 < n) {
            out[o++] = (uint8_t)(((b & 0x03u) << 6) | ((uint8_t)s[++i] & 0x3Fu));
        } else {
            return false;
        }
    }
    *outn = o;
    return true;
}

static int put_atom_text(kiln_etf_enc *e, kiln_term a)
{
    if (e->o.atom_ref) {
        int idx = e->o.atom_ref(e->o.atom_ref_arg, a);
        if (idx >= 0 && idx < 255) {
            return put2(e, ETF_ATOM_CACHE_REF, (uint8_t)idx);
        }
    }
    size_t n;
    const char *s = kiln_atom_text(a, &n);
    if (!s)
        return KILN_EBADARG;
    if (e->o.minor_version < 2 && n <= 255) {
        /* ASCII, the common case, is its own Latin-1: written in place. */
        uint8_t *w = room(e, 3 + n);
        if (!w)
            return KILN_ENOMEM;
        size_t i = 0;
        while (i < n && (uint8_t)s[i] < 0x80) {
            w[3 + i] = (uint8_t)s[i];
            i++;
        }
        if (i == n) {
            w[0] = ETF_ATOM;
            etf_put16(w + 1, (uint16_t)n);
            advance(e, 3 + n);
            return KILN_OK;
        }
    }
    uint8_t l1[512];
    size_t l1n;
    if (e->o.minor_version < 2 && n <= 510 && to_latin1(s, n, l1, &l1n)) {
        /* term_to_binary before OTP 26: Latin-1 atoms keep the old tag. */
        uint8_t h[3] = {ETF_ATOM};
        etf_put16(h + 1, (uint16_t)l1n);
        int rc = put(e, h, 3);
        return rc ? rc : put(e, l1, l1n);
    }
    int rc;
    if (n <= 255) {
        rc = put2(e, ETF_SMALL_ATOM_UTF8, (uint8_t)n);
    } else {
        uint8_t h[3] = {ETF_ATOM_UTF8};
        etf_put16(h + 1, (uint16_t)n);
        rc = put(e, h, 3);
    }
    return rc ? rc : put(e, s, n);
}

/* The last atom written, kept encoded: terms repeat an atom from one to
 * the next (ok, a record tag), and a hit is one fixed-size copy instead of
 * a table look-up and a scan of the text. Not with an atom cache, whose
 * hook decides afresh each time. */
static int put_atom(kiln_etf_enc *e, kiln_term a)
{
    if (e->refs) {
        int idx = kiln_out_refs_index(e->refs, a);
        return idx >= 0 ? put2(e, ETF_ATOM_CACHE_REF, (uint8_t)idx) : put_atom_text(e, a);
    }
    if (a == e->last_atom && !e->o.atom_ref) {
        uint8_t *w = room(e, sizeof e->last_enc);
        if (!w)
            return KILN_ENOMEM;
        memcpy(w, e->last_enc, sizeof e->last_enc);
        advance(e, e->last_len);
        return KILN_OK;
    }
    size_t at = e->len;
    int rc = put_atom_text(e, a);
    if (rc == KILN_OK && !e->o.atom_ref && e->len - at <= sizeof e->last_enc) {
        memcpy(e->last_enc, e->buf + at, e->len - at);
        e->last_len = e->len - at;
        e->last_atom = a;
    }
    return rc;
}

static int put_magnitude(kiln_etf_enc *e, bool neg, const uint64_t *digits, size_t nd)
{
    while (nd > 0 && digits[nd - 1] == 0)
        nd--;
    size_t nbytes = nd * 8;
    if (nd) {
        uint64_t top = digits[nd - 1];
        while (!(top >> 56)) {
            top <<= 8;
            nbytes--;
        }
    }
    int rc;
    if (nbytes <= 255) {
        uint8_t h[3] = {ETF_SMALL_BIG, (uint8_t)nbytes, neg ? 1 : 0};
        rc = put(e, h, 3);
    } else {
        if (nbytes > UINT32_MAX)
            return KILN_EBADARG;
        uint8_t h[6] = {ETF_LARGE_BIG};
        etf_put32(h + 1, (uint32_t)nbytes);
        h[5] = neg ? 1 : 0;
        rc = put(e, h, 6);
    }
    if (rc)
        return rc;
    uint8_t *w = reserve(e, nbytes);
    if (!w)
        return KILN_ENOMEM;
    for (size_t i = 0; i < nbytes; i++)
        w[i] = (uint8_t)(digits[i / 8] >> (8 * (i % 8)));
    e->len += nbytes;
    return KILN_OK;
}

static int put_small(kiln_etf_enc *e, int64_t v)
{
    if (v >= 0 && v <= 255) {
        return put2(e, ETF_SMALL_INTEGER, (uint8_t)v);
    }
    if (v >= INT32_MIN && v <= INT32_MAX)
        return put_tag32(e, ETF_INTEGER, (uint32_t)(int32_t)v);
    uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    return put_magnitude(e, v < 0, &mag, 1);
}

static int put_float(kiln_etf_enc *e, double f)
{
    if (e->o.minor_version == 0) {
        uint8_t h[1 + ETF_FLOAT_EXT_BYTES + 1];
        memset(h, 0, sizeof h);
        h[0] = ETF_FLOAT;
        etf_float_format((char *)h + 1, ETF_FLOAT_EXT_BYTES + 1, f);
        return put(e, h, 1 + ETF_FLOAT_EXT_BYTES);
    }
    uint64_t bits;
    memcpy(&bits, &f, sizeof bits);
    uint8_t h[9] = {ETF_NEW_FLOAT};
    etf_put64(h + 1, bits);
    return put(e, h, 9);
}

static int put_pid(kiln_etf_enc *e, kiln_term node, uint32_t id, uint32_t serial, uint32_t creation)
{
    int rc;
    if (e->refs) {
        /* The node (ours or a peer's, in a monitor or a reply) is almost
         * always a ref: then the pid is one fixed-size write. */
        int idx = kiln_out_refs_index(e->refs, node);
        if (idx >= 0) {
            uint8_t *w = room(e, 15);
            if (!w)
                return KILN_ENOMEM;
            w[0] = ETF_NEW_PID;
            w[1] = ETF_ATOM_CACHE_REF;
            w[2] = (uint8_t)idx;
            etf_put32(w + 3, id);
            etf_put32(w + 7, serial);
            etf_put32(w + 11, creation);
            advance(e, 15);
            return KILN_OK;
        }
    }
    /* An atom cache may index the node instead. */
    bool ours = node == e->node && !e->o.atom_ref && !e->refs;
    if (ours && e->node_enc_len) {
        /* A list of pids spent half its time writing the node's name. The
         * copy is of the whole array (a fixed size is a few stores, a
         * variable one a call); the bytes past the name are overwritten. */
        size_t k = e->node_enc_len;
        uint8_t *w = room(e, 1 + NODE_ENC_MAX + 12);
        if (!w)
            return KILN_ENOMEM;
        w[0] = ETF_NEW_PID;
        memcpy(w + 1, e->node_enc, NODE_ENC_MAX);
        etf_put32(w + 1 + k, id);
        etf_put32(w + 5 + k, serial);
        etf_put32(w + 9 + k, creation);
        advance(e, 13 + k);
        return KILN_OK;
    }
    if ((rc = put1(e, ETF_NEW_PID)))
        return rc;
    size_t at = e->len;
    if ((rc = put_atom(e, node)))
        return rc;
    if (ours && e->len - at <= NODE_ENC_MAX && e->len > at) {
        memcpy(e->node_enc, e->buf + at, e->len - at);
        e->node_enc_len = e->len - at;
    }
    uint8_t b[12];
    etf_put32(b, id);
    etf_put32(b + 4, serial);
    etf_put32(b + 8, creation);
    return put(e, b, 12);
}

static int put_bits(kiln_etf_enc *e, kiln_term t)
{
    const uint8_t *data;
    size_t nbits;
    int rc = kiln_get_bits(t, &data, &nbits);
    if (rc)
        return rc;
    size_t nbytes = (nbits + 7) / 8, tail = nbits % 8;
    if (nbytes > UINT32_MAX)
        return KILN_EBADARG;
    if (tail == 0) {
        rc = put_tag32(e, ETF_BINARY, (uint32_t)nbytes);
    } else {
        uint8_t h[6] = {ETF_BIT_BINARY};
        etf_put32(h + 1, (uint32_t)nbytes);
        h[5] = (uint8_t)tail;
        rc = put(e, h, 6);
    }
    if (rc)
        return rc;
    size_t whole = tail ? nbytes - 1 : nbytes;
    kiln_bin *blob = whole >= e->o.iov_threshold ? etf_bits_blob(t) : NULL;
    rc = blob ? put_borrowed(e, blob, data, whole) : put(e, data, whole);
    if (rc == KILN_OK && tail)
        /* The bits past the end are zero on the wire, as OTP writes them. */
        rc = put1(e, (uint8_t)(data[whole] & (0xFF00u >> tail)));
    return rc;
}

/* ---------- containers ---------- */

static int push(kiln_etf_enc *e, uint8_t kind, kiln_term t, size_t n)
{
    void *p = e->st;
    if (grow(&p, &e->stcap, e->sp + 1, sizeof(struct eframe)) != KILN_OK)
        return KILN_ENOMEM;
    e->st = p;
    e->st[e->sp++] = (struct eframe){t, 0, n, kind};
    return KILN_OK;
}

/* A list: STRING_EXT when OTP would use it (a proper list of at most
 * 65535 integers 0..255), else LIST_EXT with its cons count. */
static int put_list(kiln_etf_enc *e, kiln_term t)
{
    size_t n = 0;
    bool str = true;
    kiln_term c = t;
    for (; kiln_is_cons(c); c = kiln_tl(c)) {
        n++;
        if (str) {
            kiln_term h = kiln_hd(c);
            if (!kiln_is_small(h) || kiln_small_value(h) < 0 || kiln_small_value(h) > 255)
                str = false;
        }
    }
    if (str && c == KILN_NIL && n <= 0xFFFF) {
        uint8_t *w = reserve(e, 3 + n);
        if (!w)
            return KILN_ENOMEM;
        w[0] = ETF_STRING;
        etf_put16(w + 1, (uint16_t)n);
        size_t i = 3;
        for (c = t; kiln_is_cons(c); c = kiln_tl(c))
            w[i++] = (uint8_t)kiln_small_value(kiln_hd(c));
        e->len += 3 + n;
        return KILN_OK;
    }
    if (n > UINT32_MAX)
        return KILN_EBADARG;
    int rc = put_tag32(e, ETF_LIST, (uint32_t)n);
    return rc ? rc : push(e, EF_LIST, t, n);
}

/* NEWER_REFERENCE_EXT, read straight from the box (include/kiln/term.h
 * gives its layout): through kiln_get_ref it was a copy of the words
 * first, and a ref rides in every call's monitor, request and reply. */
static int put_ref(kiln_etf_enc *e, kiln_term t)
{
    const kiln_term *p = kiln_box_ptr(t);
    size_t n = (size_t)(p[2] >> 32);
    if (n > ETF_MAX_REF_WORDS)
        return KILN_EBADARG;
    uint8_t *w = room(e, 3);
    if (!w)
        return KILN_ENOMEM;
    w[0] = ETF_NEWER_REFERENCE;
    etf_put16(w + 1, (uint16_t)n);
    advance(e, 3);
    int rc = put_atom(e, p[1]);
    if (rc)
        return rc;
    if (!(w = room(e, 4 + 4 * ETF_MAX_REF_WORDS)))
        return KILN_ENOMEM;
    etf_put32(w, (uint32_t)p[2]);
    for (size_t i = 0; i < n; i++)
        etf_put32(w + 4 + 4 * i, (uint32_t)(p[3 + i / 2] >> (32 * (i % 2))));
    advance(e, 4 + 4 * n);
    return KILN_OK;
}

/* Boxes other than tuples, maps, binaries, pids and refs: off the hot
 * path. */
static __attribute__((noinline)) int put_box(kiln_etf_enc *e, kiln_term t, unsigned sub)
{
    switch (sub) {
    case KILN_SUB_POS_BIG:
    case KILN_SUB_NEG_BIG: {
        bool neg;
        const uint64_t *digits;
        size_t nd;
        uint64_t scratch;
        int rc = kiln_get_bigint(t, &neg, &digits, &nd, &scratch);
        return rc ? rc : put_magnitude(e, neg, digits, nd);
    }
    case KILN_SUB_FLOAT: {
        double f;
        int rc = kiln_get_double(t, &f);
        return rc ? rc : put_float(e, f);
    }
    case KILN_SUB_PORT: {
        kiln_term node;
        uint64_t id;
        uint32_t cre;
        int rc = kiln_get_port(t, &node, &id, &cre);
        if (rc)
            return rc;
        /* OTP keeps NEW_PORT_EXT for numbers that fit its old 28 bits. */
        bool v4 = id > 0x0FFFFFFFu;
        if ((rc = put1(e, v4 ? ETF_V4_PORT : ETF_NEW_PORT)) || (rc = put_atom(e, node)))
            return rc;
        uint8_t b[12];
        size_t k = 0;
        if (v4) {
            etf_put64(b, id);
            k = 8;
        } else {
            etf_put32(b, (uint32_t)id);
            k = 4;
        }
        etf_put32(b + k, cre);
        return put(e, b, k + 4);
    }
    case KILN_SUB_EXPORT: {
        kiln_term mod, fun;
        unsigned arity;
        int rc = kiln_get_export(t, &mod, &fun, &arity);
        if (rc)
            return rc;
        if (arity > 255)
            return KILN_EBADARG;
        if ((rc = put1(e, ETF_EXPORT)) || (rc = put_atom(e, mod)) || (rc = put_atom(e, fun)))
            return rc;
        return put2(e, ETF_SMALL_INTEGER, (uint8_t)arity);
    }
    case KILN_SUB_FUN: {
        const uint8_t *bytes;
        size_t n;
        int rc = kiln_get_fun(t, &bytes, &n);
        if (rc)
            return rc;
        return (rc = put1(e, ETF_NEW_FUN)) ? rc : put(e, bytes, n);
    }
    default:
        return KILN_EBADARG;
    }
}

/* Writes t, or the header of t and a frame for its children.
 *
 * Tests in order of frequency rather than a switch: the compiler makes a
 * switch this size a jump table, and its one indirect branch, taken with a
 * different target for each element of a tuple, was mispredicted often
 * enough to be a third of small-term encoding (perf annotate). */
static int put_one(kiln_etf_enc *e, kiln_term t)
{
    unsigned tag = kiln_tag(t);
    if (tag == KILN_TAG_SMALL)
        return put_small(e, kiln_small_value(t));
    if (tag == KILN_TAG_ATOM)
        return put_atom(e, t);
    if (tag == KILN_TAG_BOXED && t != 0) {
        unsigned sub = kiln_box_subtag(t);
        if (sub == KILN_SUB_TUPLE) {
            size_t n = kiln_tuple_arity(t);
            int rc;
            if (n <= 255) {
                rc = put2(e, ETF_SMALL_TUPLE, (uint8_t)n);
            } else {
                if (n > UINT32_MAX)
                    return KILN_EBADARG;
                rc = put_tag32(e, ETF_LARGE_TUPLE, (uint32_t)n);
            }
            if (rc || n == 0)
                return rc;
            return push(e, EF_TUPLE, t, n);
        }
        if (sub == KILN_SUB_BINARY)
            return put_bits(e, t);
        if (sub == KILN_SUB_MAP) {
            size_t n = kiln_map_size(t);
            if (n > UINT32_MAX)
                return KILN_EBADARG;
            int rc = put_tag32(e, ETF_MAP, (uint32_t)n);
            if (rc || n == 0)
                return rc;
            return push(e, EF_MAP, t, 2 * n);
        }
        if (sub == KILN_SUB_EXT_PID) {
            const kiln_term *p = kiln_box_ptr(t);
            return put_pid(e, p[1], (uint32_t)p[2], (uint32_t)(p[2] >> 32), (uint32_t)p[3]);
        }
        if (sub == KILN_SUB_REF)
            return put_ref(e, t);
        return put_box(e, t, sub);
    }
    if (tag == KILN_TAG_CONS)
        return put_list(e, t);
    if (tag == KILN_TAG_PID)
        return put_pid(e, e->node, kiln_local_pid_id(t), kiln_local_pid_serial(t), e->creation);
    return t == KILN_NIL ? put1(e, ETF_NIL) : KILN_EBADARG;
}

static int encode(kiln_etf_enc *e, kiln_term t)
{
    size_t base = e->sp;
    int rc = put_one(e, t);
    while (rc == KILN_OK && e->sp > base) {
        struct eframe *f = &e->st[e->sp - 1];
        kiln_term x;
        switch (f->kind) {
        case EF_TUPLE:
            x = kiln_tuple_get(f->t, f->i++);
            break;
        case EF_MAP:
            x = f->i % 2 == 0 ? kiln_map_key(f->t, f->i / 2) : kiln_map_value(f->t, f->i / 2);
            f->i++;
            break;
        default: /* EF_LIST: n heads, then the tail */
            if (f->i < f->n) {
                x = kiln_hd(f->t);
                f->t = kiln_tl(f->t);
                /* Keep the frame: the tail still follows the last head. */
                f->i++;
                rc = put_one(e, x);
                continue;
            }
            x = f->t;
            f->i = f->n + 1;
            break;
        }
        /* The last child of a container replaces it on the stack. */
        if (f->i >= f->n)
            e->sp--;
        rc = put_one(e, x);
    }
    e->sp = base;
    return rc;
}

int kiln_etf_enc_term(kiln_etf_enc *e, kiln_term t)
{
    if (!e)
        return KILN_EINVAL;
    size_t len = e->len, seg_start = e->seg_start, nsegs = e->nsegs, nbins = e->nbins, borrowed = e->borrowed;
    int rc = encode(e, t);
    if (rc != KILN_OK) {
        /* Leave the encoder as it was before this term. */
        drop_bins(e, nbins);
        e->len = len;
        e->seg_start = seg_start;
        e->nsegs = nsegs;
        e->borrowed = borrowed;
    }
    return rc;
}

int kiln_etf_enc_whole(kiln_etf_enc *e, kiln_term t)
{
    if (!e)
        return KILN_EINVAL;
    size_t len = e->len;
    int rc = put1(e, KILN_ETF_VERSION);
    if (rc == KILN_OK && (rc = kiln_etf_enc_term(e, t)) != KILN_OK) {
        e->len = len;
    }
    return rc;
}
