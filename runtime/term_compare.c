/* Erlang term order, exact equality and hashing.
 *
 * Compound terms are walked with an explicit stack of frames, each frame a
 * pair of word arrays compared element by element (tuple elements, the two
 * words of a cons cell, map keys then values). A frame is popped before its
 * last element is examined, so walking down a list's tails reuses the same
 * slot and a list of any length needs constant stack; only nesting through
 * heads or elements deepens the (heap) stack.
 *
 * Pids, ports and refs compare by node name, then creation, then their
 * numbers, as BEAM does. Local pids belong to the local node (see
 * kiln_term_set_local_node); in the rare case where a remote pid names the
 * local node with the same creation, id and serial, the local one sorts
 * first so that cmp == 0 still means =:=. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "bignum.h"
#include "term_layout.h"

static _Atomic kiln_term local_node = KILN_NONE;
static _Atomic uint32_t local_creation;

void kiln_term_set_local_node(kiln_term node, uint32_t creation)
{
    if (!kiln_is_atom(node))
        return;
    atomic_store_explicit(&local_creation, creation, memory_order_relaxed);
    atomic_store_explicit(&local_node, node, memory_order_release);
}

kiln_term kiln_term_local_node(uint32_t *creation)
{
    kiln_term n = atomic_load_explicit(&local_node, memory_order_acquire);
    if (n == KILN_NONE) {
        kiln_atoms_init();
        n = KILN_ATOM_NONODE;
        if (creation)
            *creation = 0;
        return n;
    }
    if (creation)
        *creation = atomic_load_explicit(&local_creation, memory_order_relaxed);
    return n;
}

/* Rank of each type in Erlang's order. */
static int type_rank(kiln_term t)
{
    switch (kiln_type_of(t)) {
    case KILN_T_INTEGER:
    case KILN_T_FLOAT: return 0;
    case KILN_T_ATOM: return 1;
    case KILN_T_REF: return 2;
    case KILN_T_FUN: return 3;
    case KILN_T_PORT: return 4;
    case KILN_T_PID: return 5;
    case KILN_T_TUPLE: return 6;
    case KILN_T_MAP: return 7;
    case KILN_T_NIL: return 8;
    case KILN_T_LIST: return 9;
    case KILN_T_BITSTRING: return 10;
    case KILN_T_INVALID: break;
    }
    return 11;
}

#define SIGN(x) ((x) < 0 ? -1 : (x) > 0)

static int cmp_u64(uint64_t a, uint64_t b) { return a < b ? -1 : a > b; }

static int cmp_atoms(kiln_term a, kiln_term b)
{
    if (a == b)
        return 0;
    size_t la = 0, lb = 0;
    const char *ta = kiln_atom_text(a, &la), *tb = kiln_atom_text(b, &lb);
    if (!ta || !tb)
        return cmp_u64(a, b);
    int c = memcmp(ta, tb, la < lb ? la : lb);
    if (c)
        return SIGN(c);
    return cmp_u64(la, lb);
}

static int cmp_nodes(kiln_term na, uint32_t ca, kiln_term nb, uint32_t cb)
{
    int c = cmp_atoms(na, nb);
    return c ? c : cmp_u64(ca, cb);
}

static double float_of(kiln_term t)
{
    double d;
    memcpy(&d, kiln_box_ptr(t) + 1, sizeof d);
    return d;
}

/* In exact (map-key) order every integer sorts before every float, as in
 * BEAM; otherwise they compare by mathematical value. */
static int cmp_numbers(kiln_term a, kiln_term b, bool exact)
{
    if (kiln_is_small(a) && kiln_is_small(b)) {
        int64_t x = kiln_small_value(a), y = kiln_small_value(b);
        return x < y ? -1 : x > y;
    }
    bool fa = kiln_is_float(a), fb = kiln_is_float(b);
    if (fa && fb) {
        double x = float_of(a), y = float_of(b);
        return x < y ? -1 : x > y;
    }
    uint64_t sa, sb;
    bool na, nb;
    const uint64_t *da, *db;
    size_t la, lb;
    if (fa || fb) {
        if (exact)
            return fa ? 1 : -1;
        if (fb) {
            kiln_get_bigint(a, &na, &da, &la, &sa);
            return kiln_int_cmp_double(na, da, la, float_of(b));
        }
        kiln_get_bigint(b, &nb, &db, &lb, &sb);
        return -kiln_int_cmp_double(nb, db, lb, float_of(a));
    }
    kiln_get_bigint(a, &na, &da, &la, &sa);
    kiln_get_bigint(b, &nb, &db, &lb, &sb);
    la = kiln_mag_trim(da, la);
    lb = kiln_mag_trim(db, lb);
    int sga = la == 0 ? 0 : (na ? -1 : 1), sgb = lb == 0 ? 0 : (nb ? -1 : 1);
    if (sga != sgb)
        return sga < sgb ? -1 : 1;
    int c = kiln_mag_cmp(da, la, db, lb);
    return na ? -c : c;
}

struct pid_view {
    kiln_term node;
    uint32_t creation, id, serial;
    bool local;
};

static struct pid_view pid_view(kiln_term t)
{
    struct pid_view v;
    if (kiln_is_local_pid(t)) {
        v.node = kiln_term_local_node(&v.creation);
        v.id = kiln_local_pid_id(t);
        v.serial = kiln_local_pid_serial(t);
        v.local = true;
    } else {
        const kiln_term *p = kiln_box_ptr(t);
        v.node = p[1];
        v.creation = (uint32_t)p[3];
        v.id = (uint32_t)p[2];
        v.serial = (uint32_t)(p[2] >> 32);
        v.local = false;
    }
    return v;
}

static int cmp_pids(kiln_term a, kiln_term b)
{
    if (kiln_is_local_pid(a) && kiln_is_local_pid(b))
        return cmp_u64(a, b); /* serial in the high bits, then id: BEAM's order */
    struct pid_view x = pid_view(a), y = pid_view(b);
    int c = cmp_nodes(x.node, x.creation, y.node, y.creation);
    if (!c)
        c = cmp_u64(x.serial, y.serial);
    if (!c)
        c = cmp_u64(x.id, y.id);
    if (!c)
        c = (int)y.local - (int)x.local;
    return c;
}

/* Significant ref numbers: BEAM ignores high zero words of the longer one. */
static size_t ref_words(kiln_term t, uint32_t *w)
{
    size_t n = 0;
    kiln_get_ref(t, NULL, NULL, w, &n);
    while (n > 1 && w[n - 1] == 0)
        n--;
    return n;
}

static int cmp_refs(kiln_term a, kiln_term b)
{
    const kiln_term *p = kiln_box_ptr(a), *q = kiln_box_ptr(b);
    int c = cmp_nodes(p[1], (uint32_t)p[2], q[1], (uint32_t)q[2]);
    if (c)
        return c;
    uint32_t wa[KILN_REF_MAX_WORDS], wb[KILN_REF_MAX_WORDS];
    size_t na = ref_words(a, wa), nb = ref_words(b, wb);
    if (na != nb)
        return cmp_u64(na, nb);
    for (size_t i = na; i-- > 0;) {
        if (wa[i] != wb[i])
            return cmp_u64(wa[i], wb[i]);
    }
    return 0;
}

static int cmp_ports(kiln_term a, kiln_term b)
{
    const kiln_term *p = kiln_box_ptr(a), *q = kiln_box_ptr(b);
    int c = cmp_nodes(p[1], (uint32_t)p[3], q[1], (uint32_t)q[3]);
    return c ? c : cmp_u64(p[2], q[2]);
}

/* Local funs sort before exports (as BEAM orders them). */
static int cmp_funs(kiln_term a, kiln_term b)
{
    bool ea = kiln_is_box_of(a, KILN_SUB_EXPORT), eb = kiln_is_box_of(b, KILN_SUB_EXPORT);
    if (ea != eb)
        return ea ? 1 : -1;
    if (ea) {
        const kiln_term *p = kiln_box_ptr(a), *q = kiln_box_ptr(b);
        int c = cmp_atoms(p[1], q[1]);
        if (!c)
            c = cmp_atoms(p[2], q[2]);
        return c ? c : cmp_u64(p[3], q[3]);
    }
    const struct kiln_fun_box *f = kiln_fun_box(a), *g = kiln_fun_box(b);
    int c = 0;
    if (f->module != g->module) {
        if (f->module == KILN_NONE || g->module == KILN_NONE)
            c = f->module == KILN_NONE ? -1 : 1;
        else
            c = cmp_atoms(f->module, g->module);
    }
    if (!c)
        c = cmp_u64(f->index, g->index);
    if (!c)
        c = f->old_uniq < g->old_uniq ? -1 : f->old_uniq > g->old_uniq;
    if (!c)
        c = cmp_u64(f->len, g->len);
    if (!c)
        c = SIGN(memcmp(f->ext, g->ext, (size_t)f->len));
    return c;
}

/* The tail bits past nbits are zero, so whole-byte comparison of the
 * shorter length, then the bit length, gives the bitwise order. */
static int cmp_bits(kiln_term a, kiln_term b)
{
    const struct kiln_binary_box *x = kiln_binary_box(a), *y = kiln_binary_box(b);
    uint64_t n = x->nbits < y->nbits ? x->nbits : y->nbits;
    size_t bytes = (size_t)(n / 8 + (n % 8 != 0));
    if (bytes) {
        int c = memcmp(x->data, y->data, bytes);
        if (c)
            return SIGN(c);
    }
    return cmp_u64(x->nbits, y->nbits);
}

struct frame {
    const kiln_term *a, *b;
    size_t n;
    bool exact;
};

struct walk {
    struct frame *f;
    size_t n, cap;
    struct frame small[32];
};

static void walk_push(struct walk *w, const kiln_term *a, const kiln_term *b, size_t n, bool exact)
{
    if (n == 0)
        return;
    if (w->n == w->cap) {
        /* Comparison has no error return; running out of memory while
         * holding a million nested frames is treated like stack overflow. */
        if (w->cap > SIZE_MAX / 2 / sizeof(struct frame))
            abort();
        size_t cap = w->cap * 2;
        struct frame *f = kiln_malloc(cap * sizeof *f);
        if (!f) {
            fputs("kiln: out of memory comparing terms\n", stderr);
            abort();
        }
        memcpy(f, w->f, w->n * sizeof *f);
        if (w->f != w->small)
            kiln_free(w->f);
        w->f = f;
        w->cap = cap;
    }
    w->f[w->n++] = (struct frame){a, b, n, exact};
}

/* Compares one pair; pushes frames for the parts of compound terms. */
static int cmp_step(struct walk *w, kiln_term a, kiln_term b, bool exact)
{
    int ra = type_rank(a), rb = type_rank(b);
    if (ra != rb)
        return ra < rb ? -1 : 1;
    switch (ra) {
    case 0: return cmp_numbers(a, b, exact);
    case 1: return cmp_atoms(a, b);
    case 2: return cmp_refs(a, b);
    case 3: return cmp_funs(a, b);
    case 4: return cmp_ports(a, b);
    case 5: return cmp_pids(a, b);
    case 6: {
        size_t na = kiln_tuple_arity(a), nb = kiln_tuple_arity(b);
        if (na != nb)
            return na < nb ? -1 : 1;
        walk_push(w, kiln_box_ptr(a) + 1, kiln_box_ptr(b) + 1, na, exact);
        return 0;
    }
    case 7: {
        size_t na = kiln_map_size(a), nb = kiln_map_size(b);
        if (na != nb)
            return na < nb ? -1 : 1;
        /* Values after keys; keys always in map-key (exact) order. */
        walk_push(w, kiln_box_ptr(a) + 1 + na, kiln_box_ptr(b) + 1 + nb, na, exact);
        walk_push(w, kiln_box_ptr(a) + 1, kiln_box_ptr(b) + 1, na, true);
        return 0;
    }
    case 8: return 0;
    case 9:
        walk_push(w, kiln_cons_ptr(a), kiln_cons_ptr(b), 2, exact);
        return 0;
    case 10: return cmp_bits(a, b);
    default: return cmp_u64(a, b);
    }
}

static int compare(kiln_term a, kiln_term b, bool exact)
{
    if (a == b)
        return 0;
    /* Small integers are most map keys and most sort keys. */
    if (kiln_is_small(a) && kiln_is_small(b))
        return kiln_small_value(a) < kiln_small_value(b) ? -1 : 1;
    struct walk w = {.f = NULL, .n = 0, .cap = 32};
    w.f = w.small;
    int r = cmp_step(&w, a, b, exact);
    while (r == 0 && w.n > 0) {
        struct frame *f = &w.f[w.n - 1];
        kiln_term x = *f->a++, y = *f->b++;
        bool ex = f->exact;
        if (--f->n == 0)
            w.n--;
        if (x != y)
            r = cmp_step(&w, x, y, ex);
    }
    if (w.f != w.small)
        kiln_free(w.f);
    return r;
}

int kiln_term_cmp(kiln_term a, kiln_term b) { return compare(a, b, false); }
int kiln_term_cmp_exact(kiln_term a, kiln_term b) { return compare(a, b, true); }
bool kiln_term_eq(kiln_term a, kiln_term b) { return a == b || compare(a, b, true) == 0; }

/* ---- hashing ---- */

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + UINT64_C(0x9e3779b97f4a7c15) + (h << 6) + (h >> 2);
    h *= UINT64_C(0xff51afd7ed558ccd);
    return h ^ (h >> 29);
}

static uint64_t hash_bytes(uint64_t h, const uint8_t *p, size_t n)
{
    uint64_t acc = UINT64_C(0xcbf29ce484222325);
    for (size_t i = 0; i < n; i++) {
        acc ^= p[i];
        acc *= UINT64_C(0x100000001b3);
    }
    return mix(h, acc ^ n);
}

/* Hash of a term with no parts to walk; false for compound terms. */
static bool hash_leaf(kiln_term t, uint64_t *h)
{
    if (!kiln_is_boxed(t) && !kiln_is_cons(t)) {
        /* Immediates are equal exactly when their words are. */
        *h = mix(*h, t);
        return true;
    }
    if (kiln_is_cons(t))
        return false;
    switch (kiln_box_subtag(t)) {
    case KILN_SUB_TUPLE:
    case KILN_SUB_MAP: return false;
    case KILN_SUB_FLOAT: {
        double d = float_of(t);
        if (d == 0)
            d = 0; /* -0.0 =:= 0.0 */
        uint64_t bits;
        memcpy(&bits, &d, sizeof bits);
        *h = mix(mix(*h, KILN_SUB_FLOAT), bits);
        return true;
    }
    case KILN_SUB_BINARY: {
        const struct kiln_binary_box *x = kiln_binary_box(t);
        *h = hash_bytes(mix(mix(*h, KILN_SUB_BINARY), x->nbits), x->data,
                        (size_t)(x->nbits / 8 + (x->nbits % 8 != 0)));
        return true;
    }
    case KILN_SUB_REF: {
        uint32_t w[KILN_REF_MAX_WORDS];
        size_t n = ref_words(t, w);
        const kiln_term *p = kiln_box_ptr(t);
        *h = mix(mix(mix(*h, KILN_SUB_REF), p[1]), (uint32_t)p[2]);
        for (size_t i = 0; i < n; i++)
            *h = mix(*h, w[i]);
        return true;
    }
    case KILN_SUB_FUN: {
        const struct kiln_fun_box *f = kiln_fun_box(t);
        *h = hash_bytes(mix(*h, KILN_SUB_FUN), f->ext, (size_t)f->len);
        return true;
    }
    default: {
        /* Bigs, ext pids, ports, exports: equal exactly when their words are. */
        const kiln_term *p = kiln_box_ptr(t);
        size_t n = (size_t)kiln_box_size(t) + 1;
        for (size_t i = 0; i < n; i++)
            *h = mix(*h, p[i]);
        return true;
    }
    }
}

uint64_t kiln_term_hash(kiln_term t)
{
    uint64_t h = UINT64_C(0x6a09e667f3bcc908);
    struct walk w = {.f = NULL, .n = 0, .cap = 32};
    w.f = w.small;
    kiln_term cur = t;
    for (;;) {
        if (!hash_leaf(cur, &h)) {
            if (kiln_is_cons(cur)) {
                h = mix(h, KILN_TAG_CONS);
                walk_push(&w, kiln_cons_ptr(cur), kiln_cons_ptr(cur), 2, false);
            } else {
                const kiln_term *p = kiln_box_ptr(cur);
                h = mix(h, p[0]); /* subtag and size */
                walk_push(&w, p + 1, p + 1, (size_t)kiln_box_size(cur), false);
            }
        }
        if (w.n == 0)
            break;
        struct frame *f = &w.f[w.n - 1];
        cur = *f->a++;
        f->b++;
        if (--f->n == 0)
            w.n--;
    }
    if (w.f != w.small)
        kiln_free(w.f);
    return h;
}
