/* Term constructors, accessors and deep copy. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "bignum.h"
#include "message.h"
#include "term_layout.h"

/* Allocates 1 + payload words for a box, refusing sizes the header or
 * size_t cannot hold. */
static kiln_term *box_alloc(kiln_msg *m, size_t payload, unsigned subtag)
{
    if (!m || payload > KILN_HEADER_SIZE_MAX || payload > SIZE_MAX / 8 - 1)
        return NULL;
    kiln_term *p = kiln_arena_alloc(m, payload + 1);
    if (p)
        p[0] = kiln_make_header(payload, subtag);
    return p;
}

kiln_type kiln_type_of(kiln_term t)
{
    switch (kiln_tag(t)) {
    case KILN_TAG_BOXED:
        if (t == 0)
            return KILN_T_INVALID;
        switch (kiln_box_subtag(t)) {
        case KILN_SUB_TUPLE: return KILN_T_TUPLE;
        case KILN_SUB_POS_BIG:
        case KILN_SUB_NEG_BIG: return KILN_T_INTEGER;
        case KILN_SUB_FLOAT: return KILN_T_FLOAT;
        case KILN_SUB_BINARY: return KILN_T_BITSTRING;
        case KILN_SUB_MAP: return KILN_T_MAP;
        case KILN_SUB_EXT_PID: return KILN_T_PID;
        case KILN_SUB_PORT: return KILN_T_PORT;
        case KILN_SUB_REF: return KILN_T_REF;
        case KILN_SUB_FUN:
        case KILN_SUB_EXPORT: return KILN_T_FUN;
        default: return KILN_T_INVALID;
        }
    case KILN_TAG_CONS: return KILN_T_LIST;
    case KILN_TAG_SMALL: return KILN_T_INTEGER;
    case KILN_TAG_ATOM: return KILN_T_ATOM;
    case KILN_TAG_PID: return KILN_T_PID;
    case KILN_TAG_SPECIAL: return t == KILN_NIL ? KILN_T_NIL : KILN_T_INVALID;
    default: return KILN_T_INVALID;
    }
}

/* ---- numbers ---- */

kiln_term kiln_bigint(kiln_msg *m, bool negative, const uint64_t *digits, size_t n)
{
    if (!digits && n > 0)
        return KILN_NONE;
    n = kiln_mag_trim(digits, n);
    if (n == 0)
        return kiln_small(0);
    if (n == 1) {
        uint64_t d = digits[0];
        if (!negative && d <= (uint64_t)KILN_SMALL_MAX)
            return kiln_small((int64_t)d);
        if (negative && d <= (uint64_t)KILN_SMALL_MAX + 1)
            return kiln_small(-(int64_t)(d - 1) - 1);
    }
    kiln_term *p = box_alloc(m, n, negative ? KILN_SUB_NEG_BIG : KILN_SUB_POS_BIG);
    if (!p)
        return KILN_NONE;
    memcpy(p + 1, digits, n * 8);
    return kiln_box_term(p);
}

kiln_term kiln_int(kiln_msg *m, int64_t v)
{
    if (kiln_fits_small(v))
        return kiln_small(v);
    uint64_t mag = v < 0 ? -(uint64_t)v : (uint64_t)v;
    return kiln_bigint(m, v < 0, &mag, 1);
}

kiln_term kiln_uint(kiln_msg *m, uint64_t v) { return kiln_bigint(m, false, &v, 1); }

/* Erlang has no infinities or NaNs, so those are bad arguments. */
kiln_term kiln_float(kiln_msg *m, double v)
{
    if (!isfinite(v))
        return KILN_NONE;
    kiln_term *p = box_alloc(m, 1, KILN_SUB_FLOAT);
    if (!p)
        return KILN_NONE;
    memcpy(p + 1, &v, sizeof v);
    return kiln_box_term(p);
}

int kiln_get_bigint(kiln_term t, bool *negative, const uint64_t **digits, size_t *n, uint64_t *scratch)
{
    if (kiln_is_small(t)) {
        if (!scratch)
            return KILN_EINVAL;
        int64_t v = kiln_small_value(t);
        scratch[0] = v < 0 ? -(uint64_t)v : (uint64_t)v;
        if (negative)
            *negative = v < 0;
        if (digits)
            *digits = scratch;
        if (n)
            *n = v != 0;
        return KILN_OK;
    }
    if (!kiln_is_big(t))
        return KILN_EBADARG;
    if (negative)
        *negative = kiln_box_subtag(t) == KILN_SUB_NEG_BIG;
    if (digits)
        *digits = kiln_box_ptr(t) + 1;
    if (n)
        *n = (size_t)kiln_box_size(t);
    return KILN_OK;
}

int kiln_get_int64(kiln_term t, int64_t *out)
{
    if (kiln_is_small(t)) {
        if (out)
            *out = kiln_small_value(t);
        return KILN_OK;
    }
    if (!kiln_is_big(t) || kiln_box_size(t) != 1)
        return KILN_EBADARG;
    uint64_t d = kiln_box_ptr(t)[1];
    if (kiln_box_subtag(t) == KILN_SUB_POS_BIG) {
        if (d > (uint64_t)INT64_MAX)
            return KILN_EBADARG;
        if (out)
            *out = (int64_t)d;
    } else {
        if (d > (uint64_t)INT64_MAX + 1)
            return KILN_EBADARG;
        if (out)
            *out = -(int64_t)(d - 1) - 1;
    }
    return KILN_OK;
}

int kiln_get_uint64(kiln_term t, uint64_t *out)
{
    if (kiln_is_small(t)) {
        if (kiln_small_value(t) < 0)
            return KILN_EBADARG;
        if (out)
            *out = (uint64_t)kiln_small_value(t);
        return KILN_OK;
    }
    if (!kiln_is_box_of(t, KILN_SUB_POS_BIG) || kiln_box_size(t) != 1)
        return KILN_EBADARG;
    if (out)
        *out = kiln_box_ptr(t)[1];
    return KILN_OK;
}

int kiln_get_double(kiln_term t, double *out)
{
    if (!kiln_is_float(t))
        return KILN_EBADARG;
    if (out)
        memcpy(out, kiln_box_ptr(t) + 1, sizeof *out);
    return KILN_OK;
}

/* ---- tuples ---- */

kiln_term kiln_tuple_v(kiln_msg *m, size_t arity, const kiln_term *elems)
{
    if (!elems && arity > 0)
        return KILN_NONE;
    for (size_t i = 0; i < arity; i++) {
        if (elems[i] == KILN_NONE)
            return KILN_NONE;
    }
    kiln_term *p = box_alloc(m, arity, KILN_SUB_TUPLE);
    if (!p)
        return KILN_NONE;
    if (arity)
        memcpy(p + 1, elems, arity * 8);
    return kiln_box_term(p);
}

kiln_term kiln_tuple(kiln_msg *m, size_t arity, ...)
{
    va_list ap;
    va_start(ap, arity);
    kiln_term *p = box_alloc(m, arity, KILN_SUB_TUPLE);
    bool bad = false;
    for (size_t i = 0; i < arity; i++) {
        kiln_term e = va_arg(ap, kiln_term);
        bad |= e == KILN_NONE;
        if (p)
            p[1 + i] = e;
    }
    va_end(ap);
    return p && !bad ? kiln_box_term(p) : KILN_NONE;
}

kiln_term kiln_tuple_new(kiln_msg *m, size_t arity)
{
    kiln_term *p = box_alloc(m, arity, KILN_SUB_TUPLE);
    if (!p)
        return KILN_NONE;
    for (size_t i = 0; i < arity; i++)
        p[1 + i] = KILN_NIL;
    return kiln_box_term(p);
}

void kiln_tuple_set(kiln_term tuple, size_t i, kiln_term v)
{
    if (kiln_is_tuple(tuple) && i < kiln_tuple_arity(tuple))
        ((kiln_term *)(uintptr_t)tuple)[1 + i] = v;
}

/* ---- lists ---- */

kiln_term kiln_cons(kiln_msg *m, kiln_term head, kiln_term tail)
{
    if (!m || head == KILN_NONE || tail == KILN_NONE)
        return KILN_NONE;
    kiln_term *p = kiln_arena_alloc(m, 2);
    if (!p)
        return KILN_NONE;
    p[0] = head;
    p[1] = tail;
    return kiln_cons_term(p);
}

/* n cells laid out in one block, each tail pointing at the next cell. */
static kiln_term *cells_alloc(kiln_msg *m, size_t n)
{
    if (!m || n > SIZE_MAX / 16)
        return NULL;
    return kiln_msg_alloc_words(m, 2 * n);
}

kiln_term kiln_list_v(kiln_msg *m, size_t n, const kiln_term *elems, kiln_term tail)
{
    if (tail == KILN_NONE || (!elems && n > 0))
        return KILN_NONE;
    if (n == 0)
        return tail;
    for (size_t i = 0; i < n; i++) {
        if (elems[i] == KILN_NONE)
            return KILN_NONE;
    }
    kiln_term *p = cells_alloc(m, n);
    if (!p)
        return KILN_NONE;
    for (size_t i = 0; i < n; i++) {
        p[2 * i] = elems[i];
        p[2 * i + 1] = i + 1 < n ? kiln_cons_term(p + 2 * i + 2) : tail;
    }
    return kiln_cons_term(p);
}

kiln_term kiln_list(kiln_msg *m, size_t n, ...)
{
    va_list ap;
    va_start(ap, n);
    kiln_term *p = n ? cells_alloc(m, n) : NULL;
    bool bad = !m || (n && !p);
    for (size_t i = 0; i < n; i++) {
        kiln_term e = va_arg(ap, kiln_term);
        bad |= e == KILN_NONE;
        if (p) {
            p[2 * i] = e;
            p[2 * i + 1] = i + 1 < n ? kiln_cons_term(p + 2 * i + 2) : KILN_NIL;
        }
    }
    va_end(ap);
    if (bad)
        return KILN_NONE;
    return n ? kiln_cons_term(p) : KILN_NIL;
}

kiln_term kiln_string(kiln_msg *m, const char *s, size_t len)
{
    if (!m || (!s && len > 0))
        return KILN_NONE;
    if (len == 0)
        return KILN_NIL;
    kiln_term *p = cells_alloc(m, len);
    if (!p)
        return KILN_NONE;
    for (size_t i = 0; i < len; i++) {
        p[2 * i] = kiln_small((unsigned char)s[i]);
        p[2 * i + 1] = i + 1 < len ? kiln_cons_term(p + 2 * i + 2) : KILN_NIL;
    }
    return kiln_cons_term(p);
}

int64_t kiln_list_length(kiln_term t)
{
    int64_t n = 0;
    while (kiln_is_cons(t)) {
        n++;
        t = kiln_tl(t);
    }
    return t == KILN_NIL ? n : -1;
}

/* ---- maps ---- */

struct kv {
    kiln_term key, value;
    size_t order;
};

static int kv_cmp(const void *a, const void *b)
{
    const struct kv *x = a, *y = b;
    int c = kiln_term_cmp_exact(x->key, y->key);
    if (c)
        return c;
    return x->order < y->order ? -1 : (x->order > y->order);
}

kiln_term kiln_map(kiln_msg *m, size_t n, const kiln_term *keys, const kiln_term *values)
{
    if (!m || (n > 0 && (!keys || !values)))
        return KILN_NONE;
    for (size_t i = 0; i < n; i++) {
        if (keys[i] == KILN_NONE || values[i] == KILN_NONE)
            return KILN_NONE;
    }
    if (n > SIZE_MAX / 2 / 8 || n > SIZE_MAX / sizeof(struct kv))
        return KILN_NONE;
    struct kv *kv = kiln_malloc((n ? n : 1) * sizeof *kv);
    if (!kv)
        return KILN_NONE;
    for (size_t i = 0; i < n; i++)
        kv[i] = (struct kv){keys[i], values[i], i};
    /* The original position breaks ties, so the last of equal keys ends a run. */
    qsort(kv, n, sizeof *kv, kv_cmp);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (i + 1 < n && kiln_term_cmp_exact(kv[i].key, kv[i + 1].key) == 0)
            continue;
        kv[k++] = kv[i];
    }
    kiln_term *p = box_alloc(m, 2 * k, KILN_SUB_MAP);
    if (p) {
        for (size_t i = 0; i < k; i++) {
            p[1 + i] = kv[i].key;
            p[1 + k + i] = kv[i].value;
        }
    }
    kiln_free(kv);
    return p ? kiln_box_term(p) : KILN_NONE;
}

size_t kiln_map_size(kiln_term map) { return kiln_is_map(map) ? (size_t)(kiln_box_size(map) / 2) : 0; }

kiln_term kiln_map_key(kiln_term map, size_t i)
{
    if (!kiln_is_map(map) || i >= kiln_map_size(map))
        return KILN_NONE;
    return kiln_box_ptr(map)[1 + i];
}

kiln_term kiln_map_value(kiln_term map, size_t i)
{
    size_t n = kiln_map_size(map);
    if (!kiln_is_map(map) || i >= n)
        return KILN_NONE;
    return kiln_box_ptr(map)[1 + n + i];
}

/* Index of key, or ~insertion point when absent. */
static bool map_find(kiln_term map, kiln_term key, size_t *pos)
{
    const kiln_term *keys = kiln_box_ptr(map) + 1;
    size_t lo = 0, hi = kiln_map_size(map);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = kiln_term_cmp_exact(keys[mid], key);
        if (c == 0) {
            *pos = mid;
            return true;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *pos = lo;
    return false;
}

kiln_term kiln_map_get(kiln_term map, kiln_term key)
{
    size_t pos;
    if (!kiln_is_map(map) || key == KILN_NONE || !map_find(map, key, &pos))
        return KILN_NONE;
    return kiln_box_ptr(map)[1 + kiln_map_size(map) + pos];
}

kiln_term kiln_map_put(kiln_msg *m, kiln_term map, kiln_term key, kiln_term value)
{
    if (!kiln_is_map(map) || key == KILN_NONE || value == KILN_NONE)
        return KILN_NONE;
    size_t n = kiln_map_size(map), pos;
    const kiln_term *old = kiln_box_ptr(map) + 1;
    bool found = map_find(map, key, &pos);
    size_t k = found ? n : n + 1;
    kiln_term *p = box_alloc(m, 2 * k, KILN_SUB_MAP);
    if (!p)
        return KILN_NONE;
    kiln_term *keys = p + 1, *vals = p + 1 + k;
    if (found) {
        memcpy(keys, old, n * 8);
        memcpy(vals, old + n, n * 8);
        vals[pos] = value;
    } else {
        memcpy(keys, old, pos * 8);
        keys[pos] = key;
        memcpy(keys + pos + 1, old + pos, (n - pos) * 8);
        memcpy(vals, old + n, pos * 8);
        vals[pos] = value;
        memcpy(vals + pos + 1, old + n + pos, (n - pos) * 8);
    }
    return kiln_box_term(p);
}

/* ---- pids, ports, refs, funs ---- */

kiln_term kiln_ext_pid(kiln_msg *m, kiln_term node, uint32_t id, uint32_t serial, uint32_t creation)
{
    if (!kiln_is_atom(node))
        return KILN_NONE;
    kiln_term *p = box_alloc(m, 3, KILN_SUB_EXT_PID);
    if (!p)
        return KILN_NONE;
    p[1] = node;
    p[2] = (uint64_t)id | (uint64_t)serial << 32;
    p[3] = creation;
    return kiln_box_term(p);
}

/* Local pids fill id and serial only: their node and creation are the
 * caller's own, so *node and *creation are left as the caller set them. */
int kiln_get_ext_pid(kiln_term t, kiln_term *node, uint32_t *id, uint32_t *serial, uint32_t *creation)
{
    if (kiln_is_local_pid(t)) {
        if (id)
            *id = kiln_local_pid_id(t);
        if (serial)
            *serial = kiln_local_pid_serial(t);
        return KILN_OK;
    }
    if (!kiln_is_box_of(t, KILN_SUB_EXT_PID))
        return KILN_EBADARG;
    const kiln_term *p = kiln_box_ptr(t);
    if (node)
        *node = p[1];
    if (id)
        *id = (uint32_t)p[2];
    if (serial)
        *serial = (uint32_t)(p[2] >> 32);
    if (creation)
        *creation = (uint32_t)p[3];
    return KILN_OK;
}

kiln_term kiln_port(kiln_msg *m, kiln_term node, uint64_t id, uint32_t creation)
{
    if (!kiln_is_atom(node))
        return KILN_NONE;
    kiln_term *p = box_alloc(m, 3, KILN_SUB_PORT);
    if (!p)
        return KILN_NONE;
    p[1] = node;
    p[2] = id;
    p[3] = creation;
    return kiln_box_term(p);
}

int kiln_get_port(kiln_term t, kiln_term *node, uint64_t *id, uint32_t *creation)
{
    if (!kiln_is_box_of(t, KILN_SUB_PORT))
        return KILN_EBADARG;
    const kiln_term *p = kiln_box_ptr(t);
    if (node)
        *node = p[1];
    if (id)
        *id = p[2];
    if (creation)
        *creation = (uint32_t)p[3];
    return KILN_OK;
}

kiln_term kiln_ref(kiln_msg *m, kiln_term node, uint32_t creation, const uint32_t *words, size_t nwords)
{
    if (!kiln_is_atom(node) || nwords == 0 || nwords > KILN_REF_MAX_WORDS || !words)
        return KILN_NONE;
    size_t packed = (nwords + 1) / 2;
    kiln_term *p = box_alloc(m, 2 + packed, KILN_SUB_REF);
    if (!p)
        return KILN_NONE;
    p[1] = node;
    p[2] = (uint64_t)creation | (uint64_t)nwords << 32;
    for (size_t i = 0; i < packed; i++) {
        uint64_t lo = words[2 * i];
        uint64_t hi = 2 * i + 1 < nwords ? words[2 * i + 1] : 0;
        p[3 + i] = lo | hi << 32;
    }
    return kiln_box_term(p);
}

int kiln_get_ref(kiln_term t, kiln_term *node, uint32_t *creation, uint32_t *words, size_t *nwords)
{
    if (!kiln_is_ref(t))
        return KILN_EBADARG;
    const kiln_term *p = kiln_box_ptr(t);
    size_t n = (size_t)(p[2] >> 32);
    if (node)
        *node = p[1];
    if (creation)
        *creation = (uint32_t)p[2];
    if (words) {
        for (size_t i = 0; i < n; i++)
            words[i] = (uint32_t)(p[3 + i / 2] >> (32 * (i % 2)));
    }
    if (nwords)
        *nwords = n;
    return KILN_OK;
}

kiln_term kiln_export(kiln_msg *m, kiln_term module, kiln_term function, unsigned arity)
{
    if (!kiln_is_atom(module) || !kiln_is_atom(function) || arity > 255)
        return KILN_NONE;
    kiln_term *p = box_alloc(m, 3, KILN_SUB_EXPORT);
    if (!p)
        return KILN_NONE;
    p[1] = module;
    p[2] = function;
    p[3] = arity;
    return kiln_box_term(p);
}

int kiln_get_export(kiln_term t, kiln_term *module, kiln_term *function, unsigned *arity)
{
    if (!kiln_is_box_of(t, KILN_SUB_EXPORT))
        return KILN_EBADARG;
    const kiln_term *p = kiln_box_ptr(t);
    if (module)
        *module = p[1];
    if (function)
        *function = p[2];
    if (arity)
        *arity = (unsigned)p[3];
    return KILN_OK;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* An ETF atom at *pos (the module of a fun): ATOM_UTF8_EXT, SMALL_ATOM_UTF8_EXT
 * or the Latin-1 forms. Anything else (an atom cache reference, say) cannot
 * be named here, and gives KILN_NONE. */
static kiln_term parse_atom(const uint8_t *b, size_t len, size_t *pos)
{
    size_t i = *pos;
    if (i >= len)
        return KILN_NONE;
    uint8_t tag = b[i++];
    size_t n;
    if (tag == 118 || tag == 100) {
        if (len - i < 2)
            return KILN_NONE;
        n = (size_t)b[i] << 8 | b[i + 1];
        i += 2;
    } else if (tag == 119 || tag == 115) {
        if (len - i < 1)
            return KILN_NONE;
        n = b[i++];
    } else {
        return KILN_NONE;
    }
    if (len - i < n)
        return KILN_NONE;
    kiln_term a = KILN_NONE;
    if (tag == 118 || tag == 119) {
        if (kiln_atom((const char *)b + i, n, &a) != KILN_OK)
            a = KILN_NONE;
    } else {
        char utf8[2 * 255];
        size_t o = 0;
        if (n > 255)
            return KILN_NONE;
        for (size_t j = 0; j < n; j++) {
            uint8_t c = b[i + j];
            if (c < 0x80) {
                utf8[o++] = (char)c;
            } else {
                utf8[o++] = (char)(0xC0 | c >> 6);
                utf8[o++] = (char)(0x80 | (c & 0x3F));
            }
        }
        if (kiln_atom(utf8, o, &a) != KILN_OK)
            a = KILN_NONE;
    }
    *pos = i + n;
    return a;
}

/* SMALL_INTEGER_EXT or INTEGER_EXT at *pos. */
static bool parse_small_int(const uint8_t *b, size_t len, size_t *pos, int64_t *out)
{
    size_t i = *pos;
    if (i < len && b[i] == 97 && len - i >= 2) {
        *out = b[i + 1];
        *pos = i + 2;
        return true;
    }
    if (i < len && b[i] == 98 && len - i >= 5) {
        *out = (int32_t)be32(b + i + 1);
        *pos = i + 5;
        return true;
    }
    return false;
}

/* NEW_FUN_EXT after the tag: Size(4) Arity(1) Uniq(16) Index(4) NumFree(4)
 * Module OldIndex OldUniq Pid FreeVars. Size counts itself and must match. */
#define FUN_FIXED_BYTES 29

kiln_term kiln_fun_opaque(kiln_msg *m, const uint8_t *ext_bytes, size_t len)
{
    if (!m || !ext_bytes || len < FUN_FIXED_BYTES || be32(ext_bytes) != len)
        return KILN_NONE;
    size_t pos = FUN_FIXED_BYTES;
    kiln_term module = parse_atom(ext_bytes, len, &pos);
    int64_t old_index = be32(ext_bytes + 21), old_uniq = 0;
    if (module != KILN_NONE) {
        int64_t oi;
        if (parse_small_int(ext_bytes, len, &pos, &oi) && parse_small_int(ext_bytes, len, &pos, &old_uniq))
            old_index = oi;
    }
    size_t words = len / 8 + (len % 8 != 0);
    kiln_term *p = box_alloc(m, KILN_FUN_BOX_WORDS - 1 + words, KILN_SUB_FUN);
    if (!p)
        return KILN_NONE;
    struct kiln_fun_box *f = (struct kiln_fun_box *)p;
    f->len = len;
    f->module = module;
    f->arity = ext_bytes[4];
    f->index = (uint32_t)old_index;
    f->old_uniq = old_uniq;
    if (words)
        p[KILN_FUN_BOX_WORDS + words - 1] = 0;
    memcpy(f->ext, ext_bytes, len);
    return kiln_box_term(p);
}

int kiln_get_fun(kiln_term t, const uint8_t **ext_bytes, size_t *len)
{
    if (!kiln_is_box_of(t, KILN_SUB_FUN))
        return KILN_EBADARG;
    const struct kiln_fun_box *f = kiln_fun_box(t);
    if (ext_bytes)
        *ext_bytes = f->ext;
    if (len)
        *len = (size_t)f->len;
    return KILN_OK;
}

/* ---- deep copy ---- */

/* Work item: copy src and store the result at *dst. */
struct copy_item {
    kiln_term *dst;
    kiln_term src;
};

struct copy_stack {
    struct copy_item *items;
    size_t n, cap;
    struct copy_item small[64];
};

static bool copy_push(struct copy_stack *s, kiln_term *dst, kiln_term src)
{
    if (s->n == s->cap) {
        if (s->cap > SIZE_MAX / 2 / sizeof(struct copy_item))
            return false;
        size_t cap = s->cap * 2;
        struct copy_item *items = kiln_malloc(cap * sizeof *items);
        if (!items)
            return false;
        memcpy(items, s->items, s->n * sizeof *items);
        if (s->items != s->small)
            kiln_free(s->items);
        s->items = items;
        s->cap = cap;
    }
    s->items[s->n++] = (struct copy_item){dst, src};
    return true;
}

static bool is_immediate(kiln_term t) { return !kiln_is_boxed(t) && !kiln_is_cons(t); }

/* Copies the words of a box holding no terms that need copying (numbers,
 * pids, ports, refs, exports: their term words are atoms). */
static kiln_term copy_flat_box(kiln_msg *m, kiln_term t)
{
    size_t words = (size_t)kiln_box_size(t) + 1;
    kiln_term *p = kiln_msg_alloc_words(m, words);
    if (!p)
        return KILN_NONE;
    memcpy(p, kiln_box_ptr(t), words * 8);
    return kiln_box_term(p);
}

kiln_term kiln_term_copy(kiln_msg *m, kiln_term t)
{
    if (!m || t == KILN_NONE)
        return KILN_NONE;
    if (is_immediate(t))
        return t;
    kiln_term root = KILN_NONE;
    /* Not zero-initialised: the inline stack is 1 KiB and only written. */
    struct copy_stack s;
    s.n = 0;
    s.cap = 64;
    s.items = s.small;
    bool ok = copy_push(&s, &root, t);
    while (ok && s.n > 0) {
        struct copy_item it = s.items[--s.n];
        kiln_term src = it.src;
        if (is_immediate(src)) {
            *it.dst = src;
            continue;
        }
        if (kiln_is_cons(src)) {
            /* A run of cells whose heads need no copying (a string, a
             * list of numbers or atoms) is copied in one pass, not a
             * stack round trip per cell. Lists are laid out cell after
             * cell by every constructor, the decoder and this copy, so
             * the next cell is stepped to by address when the tail
             * points there: the loads need not wait for each other's
             * results, as they would following the tails. */
            const kiln_term *c = kiln_cons_ptr(src);
            kiln_term *d = it.dst, rest = src;
            /* The arena's bump pointer in locals: through m, every store
             * into a cell would make the compiler load it again. */
            uint64_t *cur = m->cur, *end = m->end;
            for (;;) {
                kiln_term hd = c[0], tl = c[1];
                if (!is_immediate(hd)) {
                    rest = kiln_cons_term(c);
                    break;
                }
                kiln_term *p = cur;
                if (end - cur >= 2) {
                    cur += 2;
                } else {
                    m->cur = cur;
                    if (!(p = kiln_arena_grow(m, 2))) {
                        ok = false;
                        break;
                    }
                    cur = m->cur;
                    end = m->end;
                }
                p[0] = hd;
                *d = kiln_cons_term(p);
                d = p + 1;
                if (tl == kiln_cons_term(c + 2)) {
                    c += 2;
                } else if (kiln_is_cons(tl)) {
                    c = kiln_cons_ptr(tl);
                } else {
                    rest = tl;
                    break;
                }
            }
            if (!ok)
                break;
            m->cur = cur;
            if (d != it.dst) {
                if (is_immediate(rest))
                    *d = rest;
                else {
                    *d = KILN_NIL;
                    ok = copy_push(&s, d, rest);
                }
                continue;
            }
            kiln_term *p = kiln_msg_alloc_words(m, 2);
            if (!p) {
                ok = false;
                break;
            }
            p[0] = p[1] = KILN_NIL;
            *it.dst = kiln_cons_term(p);
            /* A boxed head. Tail below head: the head is finished before
             * the tail is taken, so a long list never piles up on the
             * stack. */
            ok = copy_push(&s, p + 1, kiln_tl(src)) && copy_push(&s, p, kiln_hd(src));
            continue;
        }
        unsigned sub = kiln_box_subtag(src);
        if (sub == KILN_SUB_TUPLE || sub == KILN_SUB_MAP) {
            size_t n = (size_t)kiln_box_size(src);
            kiln_term *p = kiln_msg_alloc_words(m, n + 1);
            if (!p) {
                ok = false;
                break;
            }
            const kiln_term *q = kiln_box_ptr(src);
            p[0] = q[0];
            *it.dst = kiln_box_term(p);
            for (size_t i = n; ok && i-- > 0;) {
                if (is_immediate(q[1 + i]))
                    p[1 + i] = q[1 + i];
                else {
                    p[1 + i] = KILN_NIL;
                    ok = copy_push(&s, p + 1 + i, q[1 + i]);
                }
            }
            continue;
        }
        kiln_term c;
        if (sub == KILN_SUB_BINARY)
            c = kiln_binary_copy(m, src);
        else
            c = copy_flat_box(m, src); /* funs included: their bytes are opaque */
        if (c == KILN_NONE) {
            ok = false;
            break;
        }
        *it.dst = c;
    }
    if (s.items != s.small)
        kiln_free(s.items);
    return ok ? root : KILN_NONE;
}
