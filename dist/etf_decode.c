/* ETF decoder: a validation pass that sizes the term exactly, then a build
 * pass that writes it into one arena block.
 *
 * Pass 1 walks the bytes with an explicit stack of open containers (for the
 * depth cap and to close funs at their declared size); every length is
 * checked against the bytes left, so nothing it accepts can make pass 2
 * read out of bounds or allocate more than it counted. Pass 2 needs no
 * stack at all: like erts' dec_term, the slots still to be filled are
 * chained through themselves (each empty slot holds the address of the
 * next), so a child is written where its parent left room for it.
 *
 * Inputs under 16 KiB, too short to nest past the depth cap, take one
 * pass instead (the "fast" mode): pass 2 checks each term as it builds it
 * (the common tags with their own length checks, the rest with pass 1's
 * scan_one) into an arena of a guessed size. The second walk and a second
 * dispatch per term were about a third of decoding a small tuple. What
 * the fast mode does not take on (funs, atoms not yet in the table, a
 * term bigger than the guess, any error) starts over with the two passes,
 * which also give the canonical error; so invalid input still creates no
 * atoms, and the term is still in one block.
 */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "dist/etf_internal.h"
#include "runtime/alloc.h"
#include "runtime/message.h"
#include "runtime/tls.h"

#define HDR(size, sub) (((uint64_t)(size) << 8) | (uint64_t)(sub))
#define INLINE_FRAMES 64
#define INLINE_MAPS 8
/* The fast mode's limit: its arena is a guess (etf_fast_words) that can
 * waste up to two bytes per input byte, so past this the exact size of two
 * passes is worth more than the walk it saves. */
#define FAST_MAX_LEN ((size_t)16 << 10)
/* Not an error anyone sees: the fast mode hands the input to the two
 * passes. */
#define FAST_BAIL (KILN_ELAST - 1)

enum frame_kind { FR_PLAIN = 0, FR_LIST, FR_FUN };

struct frame {
    uint64_t left;  /* children still to read */
    size_t fun_end; /* FR_FUN: where its bytes must end */
    size_t growth0; /* FR_FUN: d->growth when it opened */
    size_t edit;    /* FR_FUN: its Size edit, or SIZE_MAX */
    uint32_t fun_size;
    uint8_t kind;
};

/* A fun is kept as its bytes, which must not depend on the header they
 * came with: pass 1 notes each ATOM_CACHE_REF inside one (ref >= 0, the
 * tag at pos) and each fun's Size field (ref < 0, the fun's tag at pos,
 * its size once the refs inside are spelled out), in input order, for
 * pass 2 to rewrite the bytes. */
struct fun_edit {
    size_t pos;
    uint32_t size;
    int ref;
};

struct dec {
    const uint8_t *p;
    size_t len;
    size_t pos;
    const kiln_etf_decode_opts *o;
    size_t max_depth;
    kiln_term node;    /* local node atom */
    uint32_t creation; /* local creation */
    const char *node_text;
    size_t node_len;
    /* pass 1 results */
    size_t words;
    size_t nmaps;
    unsigned opaque; /* >0 while inside a fun's bytes: nothing is built */
    bool in_place;   /* the next term replaces the one just read (LIST_EXT 0) */
    size_t growth;   /* bytes the cache refs inside funs grow by when spelled out */
    struct fun_edit *edits;
    size_t nedits, capedits, ei;
    /* pass 1 stack */
    struct frame *stack;
    size_t sp, cap;
    struct frame inline_stack[INLINE_FRAMES];
    /* pass 2 */
    bool checked; /* pass 1 accepted every atom's text */
    bool fast;    /* one pass: check each term as it is built */
    kiln_msg *m;
    kiln_term *maps;
    size_t nm, capm;
    kiln_term inline_maps[INLINE_MAPS];
};

struct atom_txt {
    const uint8_t *text;
    size_t len;
    bool latin1;
    int cache;         /* ATOM_CACHE_REF index, or -1 */
    kiln_term known;   /* the atom, when the memo knew these bytes; else KILN_NONE */
    const uint8_t *enc; /* the encoding (tag first) and its length, for the memo */
    size_t enc_len;
};

/* ---------- the decoder's atom memo ----------
 *
 * Messages repeat the same atoms (ok, a record name, the node in every
 * pid), and turning text into an atom went through a Latin-1 conversion,
 * a UTF-8 check and the atom table's own memo (a hash of the text and a
 * memcmp): a fifth of decoding a small tuple. This memo is keyed on the
 * encoded bytes themselves (tag, length, text), so a hit is a few word
 * compares and needs no check: only bytes that once made a valid atom are
 * in it. Atoms are never freed, so entries never go stale. */
#define AMEMO_SLOTS 64
#define AMEMO_MAX 32 /* encodings longer than this are not memoised */

struct amemo {
    uint8_t bytes[AMEMO_MAX];
    size_t len;
    kiln_term atom;
};
static struct kiln_tls_table amemo_table = KILN_TLS_TABLE(AMEMO_SLOTS * sizeof(struct amemo), NULL);
static KILN_TLS void *tl_amemo; /* AMEMO_SLOTS entries, from the thread's first decoded atom */

static inline uint64_t load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8); /* a fixed-size copy is one load */
    return v;
}

/* The slot of an encoding of n bytes (8 <= n <= AMEMO_MAX, and 8 readable
 * bytes at p). */
static inline size_t amemo_slot(const uint8_t *p, size_t n)
{
    uint64_t h = load64(p) ^ (load64(p + n - 8) * UINT64_C(0xff51afd7ed558ccd)) ^ n;
    return (size_t)((h * UINT64_C(0x9e3779b97f4a7c15)) >> 58);
}

/* Equal n bytes, 8 <= n <= AMEMO_MAX, with overlapping word loads. */
static inline bool same_bytes(const uint8_t *a, const uint8_t *b, size_t n)
{
    for (size_t i = 0; i + 8 < n; i += 8)
        if (load64(a + i) != load64(b + i))
            return false;
    return load64(a + n - 8) == load64(b + n - 8);
}

/* The encoding at p (n bytes, with at least 8 readable from p) is hashed
 * on whole words, so short atoms only take part when the input goes on
 * past them (an atom at the very end is looked up the slow way). */
static kiln_term amemo_get(const uint8_t *p, size_t n, size_t readable)
{
    const struct amemo *amemo = tl_amemo;
    if (!amemo)
        return KILN_NONE;
    if (n < 8 || n > AMEMO_MAX) {
        if (n > AMEMO_MAX || readable < 8)
            return KILN_NONE;
        /* Short: compare the first 8 bytes with those past the atom
         * masked off (the entry stores them as zero). */
        uint64_t mask = UINT64_MAX >> (8 * (8 - n));
        uint64_t w = load64(p) & mask;
        const struct amemo *e = &amemo[(size_t)(((w ^ n) * UINT64_C(0x9e3779b97f4a7c15)) >> 58)];
        return e->len == n && load64(e->bytes) == w ? e->atom : KILN_NONE;
    }
    const struct amemo *e = &amemo[amemo_slot(p, n)];
    return e->len == n && same_bytes(e->bytes, p, n) ? e->atom : KILN_NONE;
}

static void amemo_put(const uint8_t *p, size_t n, kiln_term atom)
{
    struct amemo *amemo = tl_amemo;
    if (n > AMEMO_MAX || n == 0 || (!amemo && !(amemo = kiln_tls_table_new(&amemo_table, &tl_amemo))))
        return;
    struct amemo *e;
    if (n < 8) {
        uint64_t w = 0;
        memcpy(&w, p, n);
        e = &amemo[(size_t)(((w ^ n) * UINT64_C(0x9e3779b97f4a7c15)) >> 58)];
        memset(e->bytes, 0, sizeof e->bytes);
        memcpy(e->bytes, &w, 8);
    } else {
        e = &amemo[amemo_slot(p, n)];
        memcpy(e->bytes, p, n);
    }
    e->len = n;
    e->atom = atom;
}

/* ---------- shared helpers ---------- */

static bool have(const struct dec *d, size_t n) { return d->len - d->pos >= n; }
static size_t left_bytes(const struct dec *d) { return d->len - d->pos; }

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF);
 * counts code points. */
static bool utf8_valid(const uint8_t *s, size_t n, size_t *chars)
{
    size_t i = 0, c = 0;
    while (i < n) {
        uint8_t b = s[i];
        size_t k;
        uint32_t cp;
        if (b < 0x80) {
            i++;
            c++;
            continue;
        } else if (b >= 0xC2 && b <= 0xDF) {
            k = 1;
            cp = b & 0x1Fu;
        } else if (b >= 0xE0 && b <= 0xEF) {
            k = 2;
            cp = b & 0x0Fu;
        } else if (b >= 0xF0 && b <= 0xF4) {
            k = 3;
            cp = b & 0x07u;
        } else {
            return false;
        }
        if (n - i <= k)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + j] & 0x3Fu);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += k + 1;
        c++;
    }
    *chars = c;
    return true;
}

static size_t latin1_to_utf8(const uint8_t *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 0x80) {
            out[o++] = (char)s[i];
        } else {
            out[o++] = (char)(0xC0 | (s[i] >> 6));
            out[o++] = (char)(0x80 | (s[i] & 0x3F));
        }
    }
    return o;
}

static int add_edit(struct dec *d, size_t pos, int ref, uint32_t size)
{
    if (d->nedits == d->capedits) {
        size_t ncap = d->capedits ? d->capedits * 2 : 16;
        struct fun_edit *ne = kiln_realloc(d->edits, ncap * sizeof *ne);
        if (!ne)
            return KILN_ENOMEM;
        d->edits = ne;
        d->capedits = ncap;
    }
    d->edits[d->nedits++] = (struct fun_edit){.pos = pos, .size = size, .ref = ref};
    return KILN_OK;
}

/* The full encoding of a cached atom: SMALL_ATOM_UTF8 or ATOM_UTF8. */
static size_t spelled_len(kiln_term atom)
{
    size_t n = 0;
    kiln_atom_text(atom, &n);
    return (n <= 255 ? 2 : 3) + n;
}

static int note_ref(struct dec *d, size_t pos, int ref)
{
    size_t max = d->o->max_uncompressed ? d->o->max_uncompressed : KILN_ETF_DEFAULT_MAX_UNCOMPRESSED;
    d->growth += spelled_len(d->o->atom_refs[ref]) - 2;
    /* Two bytes may stand for a kilobyte of text: bound what a packet of
     * refs can make us copy, as for compressed terms. */
    if (d->growth > max)
        return KILN_ETOOBIG;
    return add_edit(d, pos, ref, 0);
}

/* Reads an atom in any of its forms at d->pos (tag included). */
static int read_atom(struct dec *d, struct atom_txt *a)
{
    if (!have(d, 1))
        return KILN_ETRUNCATED;
    uint8_t tag = d->p[d->pos];
    size_t n, hl;
    a->cache = -1;
    a->known = KILN_NONE;
    a->enc_len = 0;
    switch (tag) {
    case ETF_ATOM_CACHE_REF:
        if (!have(d, 2))
            return KILN_ETRUNCATED;
        a->cache = d->p[d->pos + 1];
        if (!d->o->atom_refs || (size_t)a->cache >= d->o->n_atom_refs ||
            !kiln_is_atom(d->o->atom_refs[a->cache]))
            return KILN_EBADTERM;
        if (d->opaque) {
            /* A header-relative index means nothing outside this packet:
             * the kept bytes get the atom itself instead. */
            int rc = note_ref(d, d->pos, a->cache);
            if (rc != KILN_OK)
                return rc;
        }
        a->text = NULL;
        a->len = 0;
        a->latin1 = false;
        d->pos += 2;
        return KILN_OK;
    case ETF_ATOM:
    case ETF_ATOM_UTF8:
        if (!have(d, 3))
            return KILN_ETRUNCATED;
        n = etf_get16(d->p + d->pos + 1);
        hl = 3;
        break;
    case ETF_SMALL_ATOM:
    case ETF_SMALL_ATOM_UTF8:
        if (!have(d, 2))
            return KILN_ETRUNCATED;
        n = d->p[d->pos + 1];
        hl = 2;
        break;
    default:
        return KILN_EBADTERM;
    }
    if (left_bytes(d) - hl < n)
        return KILN_EBADLENGTH;
    a->text = d->p + d->pos + hl;
    a->len = n;
    a->latin1 = (tag == ETF_ATOM || tag == ETF_SMALL_ATOM);
    a->enc = d->p + d->pos;
    a->enc_len = hl + n;
    a->known = amemo_get(a->enc, a->enc_len, left_bytes(d));
    if (a->known != KILN_NONE) {
        d->pos += hl + n;
        return KILN_OK;
    }
    if (a->latin1) {
        if (n > 255)
            return KILN_EATOM_TOO_LONG;
    } else if (!d->checked) {
        size_t chars;
        if (n > 255 * 4)
            return KILN_EATOM_TOO_LONG;
        if (!utf8_valid(a->text, n, &chars))
            return KILN_EBADUTF8;
        if (chars > 255)
            return KILN_EATOM_TOO_LONG;
    }
    d->pos += hl + n;
    return KILN_OK;
}

/* Is the atom the local node? (pass 1 decides a pid's size with it.) */
static bool atom_is_local(struct dec *d, const struct atom_txt *a)
{
    if (a->cache >= 0)
        return d->o->atom_refs[a->cache] == d->node;
    if (a->known != KILN_NONE)
        return a->known == d->node;
    /* Looked up on the first pid, port or reference, not per decode. */
    if (!d->node_text && !(d->node_text = kiln_atom_text(d->node, &d->node_len)))
        return false;
    if (!a->latin1)
        return a->len == d->node_len && memcmp(a->text, d->node_text, a->len) == 0;
    char buf[512];
    size_t n = latin1_to_utf8(a->text, a->len, buf);
    return n == d->node_len && memcmp(buf, d->node_text, n) == 0;
}

static int make_atom(const struct dec *d, const struct atom_txt *a, kiln_term *out)
{
    if (a->cache >= 0) {
        *out = d->o->atom_refs[a->cache];
        return KILN_OK;
    }
    if (a->known != KILN_NONE) {
        *out = a->known;
        return KILN_OK;
    }
    char buf[512];
    const char *s = (const char *)a->text;
    size_t n = a->len;
    if (a->latin1) {
        n = latin1_to_utf8(a->text, a->len, buf);
        s = buf;
    }
    int rc = d->o->existing_atoms_only || d->fast ? kiln_atom_existing(s, n, out) : kiln_atom(s, n, out);
    if (rc == KILN_OK)
        amemo_put(a->enc, a->enc_len, *out);
    else if (rc == KILN_ENOTREG && d->fast && !d->o->existing_atoms_only)
        rc = FAST_BAIL; /* a new atom: only once the whole input is known good */
    return rc;
}

static int build_atom_text(struct dec *d, kiln_term *out)
{
    struct atom_txt a;
    int rc = read_atom(d, &a);
    return rc != KILN_OK ? rc : make_atom(d, &a, out);
}

/* Pass 2's atom at d->pos: read_atom then make_atom, with a cache ref
 * (every atom of a frame once the peers share a cache) taken inline,
 * under read_atom's checks. Pass 2 is never inside a fun's kept bytes
 * (opaque), so such a ref has nothing to note. */
static inline int build_atom(struct dec *d, kiln_term *out)
{
    if (have(d, 2) && d->p[d->pos] == ETF_ATOM_CACHE_REF) {
        size_t i = d->p[d->pos + 1];
        if (!d->o->atom_refs || i >= d->o->n_atom_refs || !kiln_is_atom(d->o->atom_refs[i]))
            return KILN_EBADTERM;
        *out = d->o->atom_refs[i];
        d->pos += 2;
        return KILN_OK;
    }
    return build_atom_text(d, out);
}

/* Big integer magnitude bytes (little-endian) with high zero bytes
 * dropped: its length, and whether the value is a small. */
static size_t big_trim(const uint8_t *digits, size_t n)
{
    while (n > 0 && digits[n - 1] == 0)
        n--;
    return n;
}

static bool big_is_small(const uint8_t *digits, size_t n, bool neg, int64_t *v)
{
    if (n > 8)
        return false;
    uint64_t mag = 0;
    for (size_t i = n; i-- > 0;)
        mag = (mag << 8) | digits[i];
    if (!neg && mag <= (uint64_t)KILN_SMALL_MAX) {
        *v = (int64_t)mag;
        return true;
    }
    if (neg && mag <= (uint64_t)1 << 60) {
        *v = mag == (uint64_t)1 << 60 ? KILN_SMALL_MIN : -(int64_t)mag;
        return true;
    }
    return false;
}

static size_t pid_words(void) { return 4; }
static size_t port_words(void) { return 4; }
static size_t ref_words(size_t n) { return 3 + (n + 1) / 2; }
static size_t export_words(void) { return 4; }

/* ---------- pass 1: validate and size ---------- */

static int add_words(struct dec *d, size_t n)
{
    if (d->opaque || d->fast)
        return KILN_OK;
    if (n > SIZE_MAX / 8 - d->words)
        return KILN_EBADLENGTH;
    d->words += n;
    return KILN_OK;
}

static int push(struct dec *d, uint8_t kind, uint64_t children, size_t fun_end)
{
    if (d->fast)
        return KILN_OK; /* no frames: the input is too short to nest too deep */
    if (d->sp >= d->max_depth)
        return KILN_ETOODEEP;
    if (d->sp == d->cap) {
        size_t ncap = d->cap * 2;
        if (ncap > d->max_depth)
            ncap = d->max_depth;
        struct frame *ns;
        if (d->stack == d->inline_stack) {
            ns = kiln_malloc(ncap * sizeof *ns);
            if (ns)
                memcpy(ns, d->stack, d->sp * sizeof *ns);
        } else {
            ns = kiln_realloc(d->stack, ncap * sizeof *ns);
        }
        if (!ns)
            return KILN_ENOMEM;
        d->stack = ns;
        d->cap = ncap;
    }
    d->stack[d->sp].left = children;
    d->stack[d->sp].fun_end = fun_end;
    d->stack[d->sp].kind = kind;
    d->sp++;
    return KILN_OK;
}

/* Reads a pid, port or reference (tag at d->pos) in pass 1. */
static int scan_node_thing(struct dec *d, uint8_t tag)
{
    struct atom_txt a;
    int rc;
    d->pos++;
    if (tag == ETF_NEWER_REFERENCE || tag == ETF_NEW_REFERENCE) {
        if (!have(d, 2))
            return KILN_ETRUNCATED;
        size_t n = etf_get16(d->p + d->pos);
        d->pos += 2;
        if (n > ETF_MAX_REF_WORDS)
            return KILN_EBADTERM;
        if (n == 0)
            /* OTP takes it, but no real node makes one, and Kiln's refs
             * always have an ID word. */
            return KILN_EUNSUPPORTED_TERM;
        if ((rc = read_atom(d, &a)) != KILN_OK)
            return rc;
        size_t need = (tag == ETF_NEWER_REFERENCE ? 4 : 1) + 4 * n;
        if (!have(d, need))
            return KILN_ETRUNCATED;
        d->pos += need;
        return add_words(d, ref_words(n));
    }
    if ((rc = read_atom(d, &a)) != KILN_OK)
        return rc;
    size_t need;
    switch (tag) {
    case ETF_NEW_PID: need = 12; break;
    case ETF_PID: need = 9; break;
    case ETF_V4_PORT: need = 12; break;
    case ETF_NEW_PORT: need = 8; break;
    case ETF_PORT: need = 5; break;
    default: need = 5; break; /* REFERENCE_EXT: ID u32, Creation u8 */
    }
    if (!have(d, need))
        return KILN_ETRUNCATED;
    const uint8_t *q = d->p + d->pos;
    d->pos += need;
    if (tag == ETF_NEW_PID || tag == ETF_PID) {
        uint32_t serial = etf_get32(q + 4);
        uint32_t cre = tag == ETF_NEW_PID ? etf_get32(q + 8) : q[8];
        if (atom_is_local(d, &a) && cre == d->creation && serial <= 0x1FFFFFFFu)
            return KILN_OK; /* a local pid: an immediate */
        return add_words(d, pid_words());
    }
    if (tag == ETF_REFERENCE)
        return add_words(d, ref_words(1));
    return add_words(d, port_words());
}

/* One term at d->pos: a leaf is consumed whole; a container pushes a frame
 * and its children follow. */
static int scan_one(struct dec *d)
{
    if (!have(d, 1))
        return KILN_ETRUNCATED;
    const uint8_t *q = d->p + d->pos;
    uint8_t tag = q[0];
    size_t n;
    int rc;
    switch (tag) {
    case ETF_SMALL_INTEGER:
        if (!have(d, 2))
            return KILN_ETRUNCATED;
        d->pos += 2;
        return KILN_OK;
    case ETF_INTEGER:
        if (!have(d, 5))
            return KILN_ETRUNCATED;
        d->pos += 5;
        return KILN_OK;
    case ETF_SMALL_BIG:
    case ETF_LARGE_BIG: {
        size_t hl = tag == ETF_SMALL_BIG ? 3 : 6;
        if (!have(d, hl))
            return KILN_ETRUNCATED;
        n = tag == ETF_SMALL_BIG ? q[1] : etf_get32(q + 1);
        uint8_t sign = q[hl - 1];
        if (sign > 1)
            return KILN_EBADTERM;
        if (left_bytes(d) - hl < n)
            return KILN_EBADLENGTH;
        const uint8_t *dig = q + hl;
        d->pos += hl + n;
        size_t nz = big_trim(dig, n);
        int64_t v;
        if (big_is_small(dig, nz, sign == 1, &v))
            return KILN_OK;
        return add_words(d, 1 + (nz + 7) / 8);
    }
    case ETF_NEW_FLOAT: {
        if (!have(d, 9))
            return KILN_ETRUNCATED;
        uint64_t bits = etf_get64(q + 1);
        double f;
        memcpy(&f, &bits, sizeof f);
        if (!isfinite(f))
            return KILN_EBADTERM;
        d->pos += 9;
        return add_words(d, 2);
    }
    case ETF_FLOAT: {
        if (!have(d, 1 + ETF_FLOAT_EXT_BYTES))
            return KILN_ETRUNCATED;
        char buf[ETF_FLOAT_EXT_BYTES + 1];
        memcpy(buf, q + 1, ETF_FLOAT_EXT_BYTES);
        buf[ETF_FLOAT_EXT_BYTES] = 0;
        /* Digits, sign, point and exponent only: strtod would also take
         * "inf", "nan" and hex floats, which OTP does not. */
        size_t i = 0;
        while (i < ETF_FLOAT_EXT_BYTES && buf[i] && strchr("0123456789+-.eE", buf[i]))
            i++;
        if (i == 0 || (i < ETF_FLOAT_EXT_BYTES && buf[i] != 0))
            return KILN_EBADTERM;
        double f;
        if (!etf_float_parse(buf, &f) || !isfinite(f))
            return KILN_EBADTERM;
        d->pos += 1 + ETF_FLOAT_EXT_BYTES;
        return add_words(d, 2);
    }
    case ETF_ATOM:
    case ETF_SMALL_ATOM:
    case ETF_ATOM_UTF8:
    case ETF_SMALL_ATOM_UTF8:
    case ETF_ATOM_CACHE_REF: {
        struct atom_txt a;
        return read_atom(d, &a);
    }
    case ETF_NIL:
        d->pos += 1;
        return KILN_OK;
    case ETF_SMALL_TUPLE:
    case ETF_LARGE_TUPLE: {
        size_t hl = tag == ETF_SMALL_TUPLE ? 2 : 5;
        if (!have(d, hl))
            return KILN_ETRUNCATED;
        n = tag == ETF_SMALL_TUPLE ? q[1] : etf_get32(q + 1);
        d->pos += hl;
        if (n > left_bytes(d))
            return KILN_EBADLENGTH;
        if ((rc = add_words(d, 1 + n)) != KILN_OK)
            return rc;
        return n ? push(d, FR_PLAIN, n, 0) : KILN_OK;
    }
    case ETF_MAP:
        if (!have(d, 5))
            return KILN_ETRUNCATED;
        n = etf_get32(q + 1);
        d->pos += 5;
        if (n > left_bytes(d) / 2)
            return KILN_EBADLENGTH;
        if ((rc = add_words(d, 1 + 2 * n)) != KILN_OK)
            return rc;
        if (!d->opaque)
            d->nmaps++;
        return n ? push(d, FR_PLAIN, 2 * (uint64_t)n, 0) : KILN_OK;
    case ETF_STRING:
        if (!have(d, 3))
            return KILN_ETRUNCATED;
        n = etf_get16(q + 1);
        if (left_bytes(d) - 3 < n)
            return KILN_EBADLENGTH;
        d->pos += 3 + n;
        return add_words(d, 2 * n);
    case ETF_LIST:
        if (!have(d, 5))
            return KILN_ETRUNCATED;
        n = etf_get32(q + 1);
        d->pos += 5;
        /* Every element and the tail take at least one byte. */
        if (n >= left_bytes(d))
            return KILN_EBADLENGTH;
        if (n == 0) {
            d->in_place = true; /* the tail alone follows, in our place */
            return KILN_OK;
        }
        if ((rc = add_words(d, 2 * n)) != KILN_OK)
            return rc;
        return push(d, FR_LIST, (uint64_t)n + 1, 0);
    case ETF_BINARY:
        if (!have(d, 5))
            return KILN_ETRUNCATED;
        n = etf_get32(q + 1);
        if (left_bytes(d) - 5 < n)
            return KILN_EBADLENGTH;
        d->pos += 5 + n;
        return add_words(d, etf_bits_words(n * 8));
    case ETF_BIT_BINARY: {
        if (!have(d, 6))
            return KILN_ETRUNCATED;
        n = etf_get32(q + 1);
        uint8_t bits = q[5];
        if (left_bytes(d) - 6 < n)
            return KILN_EBADLENGTH;
        /* OTP: 1..8 bits used in the last byte; an empty one says 0. */
        if (n == 0 ? bits != 0 : (bits == 0 || bits > 8))
            return KILN_EBADTERM;
        d->pos += 6 + n;
        return add_words(d, etf_bits_words(n == 0 ? 0 : (n - 1) * 8 + bits));
    }
    case ETF_NEW_PID:
    case ETF_PID:
    case ETF_NEW_PORT:
    case ETF_PORT:
    case ETF_V4_PORT:
    case ETF_NEWER_REFERENCE:
    case ETF_NEW_REFERENCE:
    case ETF_REFERENCE:
        return scan_node_thing(d, tag);
    case ETF_EXPORT: {
        struct atom_txt a;
        d->pos++;
        if ((rc = read_atom(d, &a)) != KILN_OK || (rc = read_atom(d, &a)) != KILN_OK)
            return rc;
        if (!have(d, 2))
            return KILN_ETRUNCATED;
        if (d->p[d->pos] != ETF_SMALL_INTEGER)
            return KILN_EBADTERM;
        d->pos += 2;
        return add_words(d, export_words());
    }
    case ETF_NEW_FUN: {
        if (d->fast)
            return FAST_BAIL; /* its bytes are kept, checked against its Size */
        if (!have(d, 1 + ETF_FUN_FIXED))
            return KILN_ETRUNCATED;
        size_t size = etf_get32(q + 1);
        if (size < ETF_FUN_FIXED)
            return KILN_EBADTERM;
        if (left_bytes(d) - 1 < size)
            return KILN_EBADLENGTH;
        size_t numfree = etf_get32(q + 26);
        size_t fun_end = d->pos + 1 + size;
        if (numfree > size - ETF_FUN_FIXED)
            return KILN_EBADLENGTH;
        /* kiln_fun_opaque parses the module: make sure it is an atom. */
        if (size == ETF_FUN_FIXED)
            return KILN_EBADTERM;
        uint8_t mt = q[1 + ETF_FUN_FIXED];
        if (mt != ETF_ATOM && mt != ETF_SMALL_ATOM && mt != ETF_ATOM_UTF8 && mt != ETF_SMALL_ATOM_UTF8 &&
            mt != ETF_ATOM_CACHE_REF)
            return KILN_EBADTERM;
        size_t edit = SIZE_MAX;
        if (d->o->atom_refs) {
            /* Refs may follow inside: its Size may have to change. */
            edit = d->nedits;
            if ((rc = add_edit(d, d->pos, -1, (uint32_t)size)) != KILN_OK)
                return rc;
        }
        d->pos += 1 + ETF_FUN_FIXED;
        /* Module, OldIndex, OldUniq, Pid, then the free variables. Its
         * words are counted when it closes, when its size is known. */
        if ((rc = push(d, FR_FUN, 4 + (uint64_t)numfree, fun_end)) != KILN_OK)
            return rc;
        struct frame *f = &d->stack[d->sp - 1];
        f->growth0 = d->growth;
        f->edit = edit;
        f->fun_size = (uint32_t)size;
        d->opaque++;
        return KILN_OK;
    }
    case ETF_FUN:
    case ETF_LOCAL:
        return KILN_EUNSUPPORTED_TERM;
    default:
        return KILN_EBADTAG;
    }
}

static int scan(struct dec *d)
{
    d->stack = d->inline_stack;
    d->cap = INLINE_FRAMES < d->max_depth ? INLINE_FRAMES : d->max_depth;
    d->sp = 0;
    int rc = KILN_OK;
    for (;;) {
        size_t sp0 = d->sp;
        d->in_place = false;
        if ((rc = scan_one(d)) != KILN_OK)
            break;
        if (d->sp > sp0 || d->in_place)
            continue; /* children (or the tail standing in for us) follow */
        /* A term ended: close every container it completes. */
        bool done = true;
        while (d->sp > 0) {
            struct frame *f = &d->stack[d->sp - 1];
            if (--f->left == 0) {
                if (f->kind == FR_FUN) {
                    if (d->pos != f->fun_end) {
                        rc = KILN_EBADTERM;
                        goto out;
                    }
                    d->opaque--;
                    size_t size = f->fun_size + (d->growth - f->growth0);
                    if (size > UINT32_MAX) {
                        rc = KILN_ETOOBIG;
                        goto out;
                    }
                    if (f->edit != SIZE_MAX)
                        d->edits[f->edit].size = (uint32_t)size;
                    /* Only the outermost fun takes words (add_words). */
                    if ((rc = add_words(d, etf_fun_words(size))) != KILN_OK)
                        goto out;
                }
                d->sp--;
                continue;
            }
            if (f->left == 1 && f->kind == FR_LIST)
                /* Only the tail remains: it stands in for the list, so a
                 * chain of LIST_EXT tails stays at one level of nesting. */
                d->sp--;
            done = false;
            break;
        }
        if (done)
            break;
    }
out:
    if (d->stack != d->inline_stack)
        kiln_free(d->stack);
    d->stack = NULL;
    return rc;
}

/* ---------- pass 2: build ---------- */

static kiln_term *take(struct dec *d, size_t n)
{
    /* The fast mode's guess is short: give up at once (the caller starts
     * over with two passes) rather than build on and throw it away. */
    if (d->fast && (size_t)(d->m->end - d->m->cur) < n)
        return NULL;
    /* Pass 1 reserved the room, so this is a bump. */
    return kiln_arena_alloc(d->m, n);
}

static kiln_term link_of(kiln_term *slot) { return (kiln_term)(uintptr_t)slot; }
static kiln_term *slot_of(kiln_term v) { return (kiln_term *)(uintptr_t)v; }

static kiln_term build_big(struct dec *d, const uint8_t *dig, size_t n, bool neg)
{
    size_t nz = big_trim(dig, n);
    int64_t v;
    if (big_is_small(dig, nz, neg, &v))
        return kiln_small(v);
    size_t nd = (nz + 7) / 8;
    kiln_term *hp = take(d, 1 + nd);
    if (!hp)
        return KILN_NONE;
    hp[0] = HDR(nd, neg ? KILN_SUB_NEG_BIG : KILN_SUB_POS_BIG);
    memset(hp + 1, 0, nd * 8);
    for (size_t i = 0; i < nz; i++)
        hp[1 + i / 8] |= (uint64_t)dig[i] << (8 * (i % 8));
    return (kiln_term)(uintptr_t)hp;
}

static kiln_term build_float(struct dec *d, double f)
{
    kiln_term *hp = take(d, 2);
    if (!hp)
        return KILN_NONE;
    hp[0] = HDR(1, KILN_SUB_FLOAT);
    memcpy(&hp[1], &f, sizeof f);
    return (kiln_term)(uintptr_t)hp;
}

/* In the fast mode: tags whose case in build checks its own lengths,
 * as pass 1 would (the common ones: a second dispatch through scan_one
 * for each of them cost more than the checks). */
static bool checks_itself(uint8_t tag)
{
    switch (tag) {
    case ETF_SMALL_INTEGER:
    case ETF_INTEGER:
    case ETF_ATOM:
    case ETF_SMALL_ATOM:
    case ETF_ATOM_UTF8:
    case ETF_SMALL_ATOM_UTF8:
    case ETF_ATOM_CACHE_REF:
    case ETF_NIL:
    case ETF_SMALL_TUPLE:
    case ETF_LARGE_TUPLE:
    case ETF_MAP:
    case ETF_STRING:
    case ETF_LIST:
    case ETF_BINARY:
    case ETF_NEW_PID:
    case ETF_NEWER_REFERENCE:
    case ETF_NEW_REFERENCE:
        return true;
    default:
        return false;
    }
}

/* The fast mode's "fewer than n bytes left"; pass 1 checked it otherwise. */
static bool short_of(const struct dec *d, size_t n) { return d->fast && !have(d, n); }

static int build_node_thing(struct dec *d, uint8_t tag, kiln_term *out)
{
    kiln_term node;
    int rc;
    if (tag == ETF_NEWER_REFERENCE || tag == ETF_NEW_REFERENCE) {
        /* The fast mode's checks are scan_node_thing's; any error there
         * has the two passes say which. */
        if (short_of(d, 2))
            return KILN_ETRUNCATED;
        size_t n = etf_get16(d->p + d->pos);
        d->pos += 2;
        if (d->fast && (n == 0 || n > ETF_MAX_REF_WORDS))
            return KILN_EBADTERM;
        if ((rc = build_atom(d, &node)) != KILN_OK)
            return rc;
        if (short_of(d, (tag == ETF_NEWER_REFERENCE ? 4 : 1) + 4 * n))
            return KILN_ETRUNCATED;
        const uint8_t *q = d->p + d->pos;
        uint32_t cre = tag == ETF_NEWER_REFERENCE ? etf_get32(q) : q[0];
        q += tag == ETF_NEWER_REFERENCE ? 4 : 1;
        uint32_t w[ETF_MAX_REF_WORDS];
        for (size_t i = 0; i < n; i++)
            w[i] = etf_get32(q + 4 * i);
        d->pos = (size_t)(q - d->p) + 4 * n;
        *out = kiln_ref(d->m, node, cre, w, n);
        return *out == KILN_NONE ? KILN_ENOMEM : KILN_OK;
    }
    if ((rc = build_atom(d, &node)) != KILN_OK)
        return rc;
    if (tag == ETF_NEW_PID && short_of(d, 12)) /* checks_itself takes it */
        return KILN_ETRUNCATED;
    const uint8_t *q = d->p + d->pos;
    switch (tag) {
    case ETF_NEW_PID:
    case ETF_PID: {
        uint32_t id = etf_get32(q), serial = etf_get32(q + 4);
        uint32_t cre = tag == ETF_NEW_PID ? etf_get32(q + 8) : q[8];
        d->pos += tag == ETF_NEW_PID ? 12 : 9;
        if (node == d->node && cre == d->creation && serial <= 0x1FFFFFFFu) {
            *out = kiln_local_pid(id, serial);
            return KILN_OK;
        }
        *out = kiln_ext_pid(d->m, node, id, serial, cre);
        break;
    }
    case ETF_V4_PORT:
        d->pos += 12;
        *out = kiln_port(d->m, node, etf_get64(q), etf_get32(q + 8));
        break;
    case ETF_NEW_PORT:
        d->pos += 8;
        *out = kiln_port(d->m, node, etf_get32(q), etf_get32(q + 4));
        break;
    case ETF_PORT:
        d->pos += 5;
        *out = kiln_port(d->m, node, etf_get32(q), q[4]);
        break;
    default: { /* REFERENCE_EXT */
        uint32_t w = etf_get32(q);
        d->pos += 5;
        *out = kiln_ref(d->m, node, q[4], &w, 1);
        break;
    }
    }
    return *out == KILN_NONE ? KILN_ENOMEM : KILN_OK;
}

static kiln_term build_bits(struct dec *d, const uint8_t *data, size_t nbits)
{
    kiln_bin *src = d->o->source;
    if (src && nbits % 8 == 0 && nbits / 8 >= KILN_REFC_BIN_MIN) {
        uintptr_t base = (uintptr_t)kiln_bin_data(src), at = (uintptr_t)data;
        size_t n = nbits / 8, blen = kiln_bin_len(src);
        /* Not for a small part of a big blob: it would pin all of it. */
        if (at >= base && at - base <= blen && n <= blen - (at - base) && n >= blen / 8)
            return kiln_binary_from_bin(d->m, src, at - base, n);
    }
    /* The term library zeroes the bits past the end (noise on the wire). */
    return kiln_bitstring(d->m, data, nbits);
}

/* The map at hp was filled with keys and values in wire order; put them in
 * key order and refuse duplicate keys, as binary_to_term does. Heapsort:
 * O(n log n) with no scratch memory. */
static void map_swap(kiln_term *k, kiln_term *v, size_t i, size_t j)
{
    kiln_term t = k[i];
    k[i] = k[j];
    k[j] = t;
    t = v[i];
    v[i] = v[j];
    v[j] = t;
}

static void map_sift(kiln_term *k, kiln_term *v, size_t root, size_t n)
{
    for (;;) {
        size_t c = 2 * root + 1;
        if (c >= n)
            return;
        if (c + 1 < n && kiln_term_cmp_exact(k[c], k[c + 1]) < 0)
            c++;
        if (kiln_term_cmp_exact(k[root], k[c]) >= 0)
            return;
        map_swap(k, v, root, c);
        root = c;
    }
}

static int map_sort(kiln_term map)
{
    kiln_term *hp = (kiln_term *)(uintptr_t)map;
    size_t n = (size_t)(hp[0] >> 8) / 2;
    kiln_term *k = hp + 1, *v = hp + 1 + n;
    /* Maps mostly arrive in key order already (every flat map OTP writes,
     * and all of Kiln's): one pass proves it, with no duplicates. */
    size_t ordered = 1;
    while (ordered < n && kiln_term_cmp_exact(k[ordered - 1], k[ordered]) < 0)
        ordered++;
    if (ordered >= n)
        return KILN_OK;
    if (n <= 16) {
        for (size_t i = 1; i < n; i++)
            for (size_t j = i; j > 0 && kiln_term_cmp_exact(k[j - 1], k[j]) > 0; j--)
                map_swap(k, v, j - 1, j);
    } else {
        for (size_t i = n / 2; i-- > 0;)
            map_sift(k, v, i, n);
        for (size_t end = n; end-- > 1;) {
            map_swap(k, v, 0, end);
            map_sift(k, v, 0, end);
        }
    }
    for (size_t i = 1; i < n; i++)
        if (kiln_term_cmp_exact(k[i - 1], k[i]) == 0)
            return KILN_EBADTERM;
    return KILN_OK;
}

/* The fun at d->pos (n bytes after its tag), its cache refs spelled out
 * and the Size of it and of every fun inside fixed to match. */
static int build_fun(struct dec *d, size_t n, kiln_term *out)
{
    size_t start = d->pos, end = start + 1 + n;
    const struct fun_edit *first = d->ei < d->nedits ? &d->edits[d->ei] : NULL;
    if (!first || first->pos != start || first->size == n) {
        /* No refs inside: the bytes as they came. */
        while (d->ei < d->nedits && d->edits[d->ei].pos < end)
            d->ei++;
        *out = kiln_fun_opaque(d->m, d->p + start + 1, n);
        return *out == KILN_NONE ? KILN_ENOMEM : KILN_OK;
    }
    size_t ns = first->size, o = 0, cur = start + 1;
    uint8_t *buf = kiln_malloc(ns);
    if (!buf)
        return KILN_ENOMEM;
    for (; d->ei < d->nedits && d->edits[d->ei].pos < end; d->ei++) {
        const struct fun_edit *e = &d->edits[d->ei];
        if (e->ref < 0) {
            /* A fun's tag: its Size field follows. */
            memcpy(buf + o, d->p + cur, e->pos + 1 - cur);
            o += e->pos + 1 - cur;
            etf_put32(buf + o, e->size);
            o += 4;
            cur = e->pos + 5;
        } else {
            memcpy(buf + o, d->p + cur, e->pos - cur);
            o += e->pos - cur;
            size_t len;
            const char *s = kiln_atom_text(d->o->atom_refs[e->ref], &len);
            if (len <= 255) {
                buf[o++] = ETF_SMALL_ATOM_UTF8;
                buf[o++] = (uint8_t)len;
            } else {
                buf[o++] = ETF_ATOM_UTF8;
                etf_put16(buf + o, (uint16_t)len);
                o += 2;
            }
            memcpy(buf + o, s, len);
            o += len;
            cur = e->pos + 2;
        }
    }
    memcpy(buf + o, d->p + cur, end - cur);
    o += end - cur;
    *out = o == ns ? kiln_fun_opaque(d->m, buf, ns) : KILN_NONE;
    int rc = *out != KILN_NONE ? KILN_OK : o == ns ? KILN_ENOMEM : KILN_EBADTERM;
    kiln_free(buf);
    return rc;
}

/* Remembers a map to sort once its keys are built. */
static int note_map(struct dec *d, kiln_term map)
{
    if (d->nm == d->capm) {
        size_t ncap = d->capm * 2;
        kiln_term *nm = d->maps == d->inline_maps ? kiln_malloc(ncap * sizeof *nm)
                                                  : kiln_realloc(d->maps, ncap * sizeof *nm);
        if (!nm)
            return KILN_ENOMEM;
        if (d->maps == d->inline_maps)
            memcpy(nm, d->maps, d->nm * sizeof *nm);
        d->maps = nm;
        d->capm = ncap;
    }
    d->maps[d->nm++] = map;
    return KILN_OK;
}

static int build(struct dec *d, kiln_term *result)
{
    kiln_term root = 0;
    kiln_term *dest = &root; /* chain of slots to fill; 0 ends it */
    while (dest) {
        kiln_term *slot = dest;
        dest = slot_of(*slot);
        int rc;
        if (d->fast) {
            if (d->m->chunks)
                return FAST_BAIL; /* the guess was short: stop early */
            if (!have(d, 1))
                return KILN_ETRUNCATED;
            /* The common tags check their lengths below (read_atom checks
             * atoms); the rest get pass 1's check of this one term. */
            if (!checks_itself(d->p[d->pos])) {
                size_t at = d->pos;
                if ((rc = scan_one(d)) != KILN_OK)
                    return rc;
                d->pos = at;
            }
        }
        const uint8_t *q = d->p + d->pos;
        uint8_t tag = q[0];
        size_t n;
        kiln_term t;
        kiln_term *hp;
        switch (tag) {
        case ETF_SMALL_INTEGER:
            if (short_of(d, 2))
                return KILN_ETRUNCATED;
            *slot = kiln_small(q[1]);
            d->pos += 2;
            break;
        case ETF_INTEGER:
            if (short_of(d, 5))
                return KILN_ETRUNCATED;
            *slot = kiln_small((int32_t)etf_get32(q + 1));
            d->pos += 5;
            break;
        case ETF_SMALL_BIG:
            n = q[1];
            t = build_big(d, q + 3, n, q[2] == 1);
            if (t == KILN_NONE)
                return KILN_ENOMEM;
            *slot = t;
            d->pos += 3 + n;
            break;
        case ETF_LARGE_BIG:
            n = etf_get32(q + 1);
            t = build_big(d, q + 6, n, q[5] == 1);
            if (t == KILN_NONE)
                return KILN_ENOMEM;
            *slot = t;
            d->pos += 6 + n;
            break;
        case ETF_NEW_FLOAT: {
            uint64_t bits = etf_get64(q + 1);
            double f;
            memcpy(&f, &bits, sizeof f);
            if ((t = build_float(d, f)) == KILN_NONE)
                return KILN_ENOMEM;
            *slot = t;
            d->pos += 9;
            break;
        }
        case ETF_FLOAT: {
            char buf[ETF_FLOAT_EXT_BYTES + 1];
            memcpy(buf, q + 1, ETF_FLOAT_EXT_BYTES);
            buf[ETF_FLOAT_EXT_BYTES] = 0;
            double f = 0;
            etf_float_parse(buf, &f); /* pass 1 checked it */
            if ((t = build_float(d, f)) == KILN_NONE)
                return KILN_ENOMEM;
            *slot = t;
            d->pos += 1 + ETF_FLOAT_EXT_BYTES;
            break;
        }
        case ETF_ATOM:
        case ETF_SMALL_ATOM:
        case ETF_ATOM_UTF8:
        case ETF_SMALL_ATOM_UTF8:
        case ETF_ATOM_CACHE_REF:
            if ((rc = build_atom(d, &t)) != KILN_OK)
                return rc;
            *slot = t;
            break;
        case ETF_NIL:
            *slot = KILN_NIL;
            d->pos += 1;
            break;
        case ETF_SMALL_TUPLE:
        case ETF_LARGE_TUPLE:
            if (tag == ETF_SMALL_TUPLE) {
                if (short_of(d, 2))
                    return KILN_ETRUNCATED;
                n = q[1];
                d->pos += 2;
            } else {
                if (short_of(d, 5))
                    return KILN_ETRUNCATED;
                n = etf_get32(q + 1);
                d->pos += 5;
            }
            if (d->fast && n > left_bytes(d))
                return KILN_EBADLENGTH;
            if (!(hp = take(d, 1 + n)))
                return KILN_ENOMEM;
            hp[0] = HDR(n, KILN_SUB_TUPLE);
            *slot = (kiln_term)(uintptr_t)hp;
            if (n) {
                for (size_t i = 1; i < n; i++)
                    hp[i] = link_of(&hp[i + 1]);
                hp[n] = link_of(dest);
                dest = &hp[1];
            }
            break;
        case ETF_MAP:
            if (short_of(d, 5))
                return KILN_ETRUNCATED;
            n = etf_get32(q + 1);
            d->pos += 5;
            if (d->fast && n > left_bytes(d) / 2)
                return KILN_EBADLENGTH;
            if (!(hp = take(d, 1 + 2 * n)))
                return KILN_ENOMEM;
            hp[0] = HDR(2 * n, KILN_SUB_MAP);
            *slot = (kiln_term)(uintptr_t)hp;
            if (n) {
                /* Wire order is k0 v0 k1 v1 ...; keys sit in hp[1..n],
                 * values in hp[n+1..2n]. */
                for (size_t i = 0; i < n; i++) {
                    hp[1 + i] = link_of(&hp[1 + n + i]);
                    hp[1 + n + i] = i + 1 < n ? link_of(&hp[2 + i]) : link_of(dest);
                }
                dest = &hp[1];
                if ((rc = note_map(d, *slot)) != KILN_OK)
                    return rc;
            }
            break;
        case ETF_STRING:
            if (short_of(d, 3))
                return KILN_ETRUNCATED;
            n = etf_get16(q + 1);
            d->pos += 3;
            if (d->fast && n > left_bytes(d))
                return KILN_EBADLENGTH;
            if (n == 0) {
                *slot = KILN_NIL;
                break;
            }
            if (!(hp = take(d, 2 * n)))
                return KILN_ENOMEM;
            for (size_t i = 0; i < n; i++) {
                hp[2 * i] = kiln_small(q[3 + i]);
                hp[2 * i + 1] = i + 1 < n ? ((kiln_term)(uintptr_t)&hp[2 * i + 2] | KILN_TAG_CONS) : KILN_NIL;
            }
            *slot = (kiln_term)(uintptr_t)hp | KILN_TAG_CONS;
            d->pos += n;
            break;
        case ETF_LIST:
            if (short_of(d, 5))
                return KILN_ETRUNCATED;
            n = etf_get32(q + 1);
            d->pos += 5;
            if (d->fast && n >= left_bytes(d))
                return KILN_EBADLENGTH;
            if (n == 0) {
                /* The tail is the whole value: fill this slot with it. */
                *slot = link_of(dest);
                dest = slot;
                break;
            }
            if (!(hp = take(d, 2 * n)))
                return KILN_ENOMEM;
            for (size_t i = 0; i < n; i++) {
                hp[2 * i] = link_of(i + 1 < n ? &hp[2 * i + 2] : &hp[2 * i + 1]);
                if (i + 1 < n)
                    hp[2 * i + 1] = (kiln_term)(uintptr_t)&hp[2 * i + 2] | KILN_TAG_CONS;
            }
            hp[2 * n - 1] = link_of(dest);
            dest = &hp[0];
            *slot = (kiln_term)(uintptr_t)hp | KILN_TAG_CONS;
            break;
        case ETF_BINARY:
            if (short_of(d, 5))
                return KILN_ETRUNCATED;
            n = etf_get32(q + 1);
            if (d->fast && left_bytes(d) - 5 < n)
                return KILN_EBADLENGTH;
            if ((t = build_bits(d, q + 5, n * 8)) == KILN_NONE)
                return KILN_ENOMEM;
            *slot = t;
            d->pos += 5 + n;
            break;
        case ETF_BIT_BINARY:
            n = etf_get32(q + 1);
            if ((t = build_bits(d, q + 6, n == 0 ? 0 : (n - 1) * 8 + q[5])) == KILN_NONE)
                return KILN_ENOMEM;
            *slot = t;
            d->pos += 6 + n;
            break;
        case ETF_NEW_PID:
        case ETF_PID:
        case ETF_NEW_PORT:
        case ETF_PORT:
        case ETF_V4_PORT:
        case ETF_NEWER_REFERENCE:
        case ETF_NEW_REFERENCE:
        case ETF_REFERENCE:
            d->pos++;
            if ((rc = build_node_thing(d, tag, &t)) != KILN_OK)
                return rc;
            *slot = t;
            break;
        case ETF_EXPORT: {
            kiln_term mod, fun;
            d->pos++;
            if ((rc = build_atom(d, &mod)) != KILN_OK || (rc = build_atom(d, &fun)) != KILN_OK)
                return rc;
            unsigned arity = d->p[d->pos + 1];
            d->pos += 2;
            if ((t = kiln_export(d->m, mod, fun, arity)) == KILN_NONE)
                return KILN_ENOMEM;
            *slot = t;
            break;
        }
        case ETF_NEW_FUN:
            n = etf_get32(q + 1);
            if ((rc = build_fun(d, n, &t)) != KILN_OK)
                return rc;
            *slot = t;
            d->pos += 1 + n;
            break;
        default:
            /* Pass 1 accepted nothing else. */
            return KILN_EBADTAG;
        }
    }
    /* Inner maps opened after their outer ones, so sorting in reverse
     * opening order compares keys only once their own maps are sorted. */
    for (size_t i = d->nm; i-- > 0;) {
        int rc = map_sort(d->maps[i]);
        if (rc != KILN_OK)
            return rc;
    }
    *result = root;
    return KILN_OK;
}

/* ---------- entry points ---------- */

static int dec_init(struct dec *d, const uint8_t *p, size_t len, const kiln_etf_decode_opts *o)
{
    static const kiln_etf_decode_opts defaults;
    /* Field by field, leaving the inline stack (only written before it is
     * read): zeroing its 1.5 KB, and even a memset of the rest (a rep
     * stos), showed in small-term decode profiles. */
    d->pos = 0;
    d->words = d->nmaps = d->growth = 0;
    d->opaque = 0;
    d->in_place = false;
    d->edits = NULL;
    d->nedits = d->capedits = d->ei = 0;
    d->stack = NULL;
    d->sp = d->cap = 0;
    d->checked = false;
    d->fast = false;
    d->m = NULL;
    d->maps = d->inline_maps;
    d->nm = 0;
    d->capm = INLINE_MAPS;
    d->p = p;
    d->len = len;
    d->o = o ? o : &defaults;
    d->max_depth = d->o->max_depth ? d->o->max_depth : KILN_ETF_DEFAULT_MAX_DEPTH;
    d->node = etf_ctx_node(d->o->ctx);
    d->creation = etf_ctx_creation(d->o->ctx);
    if (d->node == KILN_NONE)
        return KILN_ENOMEM;
    d->node_text = NULL;
    d->node_len = 0;
    return KILN_OK;
}

/* Where the term starts, after the version byte and any compression;
 * *inflated holds the decompressed bytes (to free) when there were some. */
static int unwrap(const uint8_t *data, size_t len, bool bare, const kiln_etf_decode_opts *o,
                  const uint8_t **tp, size_t *tlen, uint8_t **inflated, size_t *wrapped_len)
{
    *inflated = NULL;
    *tp = data;
    *tlen = len;
    *wrapped_len = 0;
    if (bare)
        return KILN_OK;
    if (len < 1)
        return KILN_ETRUNCATED;
    if (data[0] != KILN_ETF_VERSION)
        return KILN_EBADVERSION;
    if (len >= 2 && data[1] == ETF_COMPRESSED) {
        if (len < 6)
            return KILN_ETRUNCATED;
        size_t size = etf_get32(data + 2);
        size_t max = o && o->max_uncompressed ? o->max_uncompressed : KILN_ETF_DEFAULT_MAX_UNCOMPRESSED;
        if (size > max)
            return KILN_ETOOBIG;
        size_t consumed;
        int rc = etf_inflate(data + 6, len - 6, size, inflated, &consumed);
        if (rc != KILN_OK)
            return rc;
        *tp = *inflated;
        *tlen = size;
        *wrapped_len = 6 + consumed;
        return KILN_OK;
    }
    *tp = data + 1;
    *tlen = len - 1;
    *wrapped_len = 0;
    return KILN_OK;
}

/* Runs pass 1 on the unwrapped term; *used = input bytes the term spans. */
static int measure(struct dec *d, bool compressed, size_t wrapped_len, bool bare, size_t *used)
{
    int rc = scan(d);
    if (rc != KILN_OK)
        return rc;
    if (compressed) {
        /* The inflated bytes are exactly one term. */
        if (d->pos != d->len)
            return KILN_ETRAILING;
        *used = wrapped_len;
    } else {
        *used = d->pos + (bare ? 0 : 1);
    }
    return KILN_OK;
}

static void free_maps(struct dec *d)
{
    if (d->maps != d->inline_maps)
        kiln_free(d->maps);
    d->maps = d->inline_maps;
    d->nm = 0;
    d->capm = INLINE_MAPS;
}

size_t etf_fast_words(size_t len)
{
    /* Most terms need under half a word per input byte (a small tuple with
     * a binary: 10 words for 19 bytes); those that need more (lists of
     * small integers take up to two) go the two-pass way. */
    return len / 4 + 8;
}

/* The one-pass decode into a new message (see the top of the file);
 * FAST_BAIL or any error: the caller starts over with two passes. */
static int decode_fast(struct dec *d, bool bare, kiln_msg **newm, kiln_term *term, size_t *used)
{
    kiln_msg *m = kiln_msg_new_words(etf_fast_words(d->len));
    if (!m)
        return KILN_ENOMEM;
    d->fast = true;
    d->m = m;
    int rc = build(d, term);
    free_maps(d);
    d->fast = false;
    if (rc == KILN_OK && m->chunks)
        rc = FAST_BAIL; /* the guess was short: one block, as the exact size gives */
    if (rc != KILN_OK) {
        kiln_msg_free(m);
        return rc;
    }
    kiln_msg_set_term(m, *term);
    *newm = m;
    *used = d->pos + (bare ? 0 : 1);
    return KILN_OK;
}

static int decode_common(kiln_msg *m, kiln_msg **newm, const void *data, size_t len, bool bare,
                         const kiln_etf_decode_opts *o, kiln_term *term, size_t *used, bool need_all)
{
    const uint8_t *tp;
    size_t tlen, wrapped, u = 0;
    uint8_t *inflated;
    if (!data && len)
        return KILN_EINVAL;
    int rc = unwrap(data, len, bare, o, &tp, &tlen, &inflated, &wrapped);
    if (rc != KILN_OK)
        return rc;
    struct dec d;
    if ((rc = dec_init(&d, tp, tlen, o)) != KILN_OK)
        goto out;
    /* Shorter than the depth cap: nothing in it can nest past the cap. */
    if (newm && !inflated && tlen <= FAST_MAX_LEN && tlen < d.max_depth) {
        if (decode_fast(&d, bare, newm, term, &u) == KILN_OK) {
            if (need_all && u != len) {
                kiln_msg_free(*newm);
                *newm = NULL;
                rc = KILN_ETRAILING;
            } else if (used) {
                *used = u;
            }
            goto out;
        }
        if ((rc = dec_init(&d, tp, tlen, o)) != KILN_OK)
            goto out;
    }
    if ((rc = measure(&d, inflated != NULL, wrapped, bare, &u)) != KILN_OK)
        goto out;
    if (need_all && u != len) {
        rc = KILN_ETRAILING;
        goto out;
    }
    if (newm) {
        m = kiln_msg_new_words(d.words);
        if (!m) {
            rc = KILN_ENOMEM;
            goto out;
        }
    } else if (!kiln_arena_reserve(m, d.words)) {
        /* The whole term in one block. */
        rc = KILN_ENOMEM;
        goto out;
    }
    if (d.nmaps > INLINE_MAPS) {
        if (d.nmaps > SIZE_MAX / sizeof(kiln_term) || !(d.maps = kiln_malloc(d.nmaps * sizeof(kiln_term)))) {
            d.maps = d.inline_maps;
            rc = KILN_ENOMEM;
            goto fail;
        }
        d.capm = d.nmaps;
    }
    d.m = m;
    d.pos = 0;
    d.checked = true;
    rc = build(&d, term);
    free_maps(&d);
    if (rc != KILN_OK)
        goto fail;
    if (newm) {
        kiln_msg_set_term(m, *term);
        *newm = m;
    }
    if (used)
        *used = u;
    goto out;
fail:
    if (newm)
        kiln_msg_free(m);
out:
    if (d.edits)
        kiln_free(d.edits);
    if (inflated)
        kiln_free(inflated);
    return rc;
}

int kiln_etf_decode(const void *data, size_t len, const kiln_etf_decode_opts *opts, kiln_msg **out, size_t *used)
{
    kiln_term t;
    if (!out)
        return KILN_EINVAL;
    *out = NULL;
    return decode_common(NULL, out, data, len, false, opts, &t, used, used == NULL);
}

int kiln_etf_decode_bare(const void *data, size_t len, const kiln_etf_decode_opts *opts, kiln_msg **out,
                         size_t *used)
{
    kiln_term t;
    if (!out || !used)
        return KILN_EINVAL;
    *out = NULL;
    return decode_common(NULL, out, data, len, true, opts, &t, used, false);
}

int kiln_etf_decode_into(kiln_msg *m, const void *data, size_t len, bool bare, const kiln_etf_decode_opts *opts,
                         kiln_term *term, size_t *used)
{
    if (!m || !term)
        return KILN_EINVAL;
    return decode_common(m, NULL, data, len, bare, opts, term, used, used == NULL);
}

int kiln_etf_measure(const void *data, size_t len, bool bare, const kiln_etf_decode_opts *opts, size_t *words,
                     size_t *used)
{
    const uint8_t *tp;
    size_t tlen, wrapped, u = 0;
    uint8_t *inflated;
    if (!data && len)
        return KILN_EINVAL;
    int rc = unwrap(data, len, bare, opts, &tp, &tlen, &inflated, &wrapped);
    if (rc != KILN_OK)
        return rc;
    struct dec d;
    if ((rc = dec_init(&d, tp, tlen, opts)) == KILN_OK &&
        (rc = measure(&d, inflated != NULL, wrapped, bare, &u)) == KILN_OK) {
        if (words)
            *words = d.words;
        if (used)
            *used = u;
    }
    kiln_free(d.edits);
    kiln_free(inflated);
    return rc;
}
