/* kiln_build / kiln_match: ei-style format strings (grammar in term.h).
 *
 * Both walk the format by recursive descent; recursion follows the nesting
 * of the format string (not of any term) and is capped at FMT_MAX_DEPTH.
 * The matcher always parses the whole format and consumes every argument,
 * even after a mismatch, so a malformed format is reported as KILN_EFORMAT
 * whatever the term, and outputs are only written once everything matched. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "term_layout.h"

#define FMT_MAX_DEPTH 100
#define ATOM_MAX_BYTES 1020

struct outs;

struct fmt {
    const char *p;
    struct outs *outs; /* matcher outputs waiting for the whole match */
    va_list *ap;
    kiln_msg *m;
    int err;
    int depth;
    bool in_key; /* parsing a map key pattern: no ~ directives */
};

static void skip_ws(struct fmt *f)
{
    while (*f->p == ' ' || *f->p == '\t' || *f->p == '\n' || *f->p == '\r')
        f->p++;
}

static void fail(struct fmt *f, int err)
{
    if (!f->err)
        f->err = err;
}

static bool accept(struct fmt *f, char c)
{
    skip_ws(f);
    if (*f->p != c)
        return false;
    f->p++;
    return true;
}

static bool is_alnum_(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '@';
}

/* One character of a quoted literal after the opening quote q; returns -1
 * at the closing quote, -2 on a malformed escape or an unterminated literal. */
static int lit_char(struct fmt *f, char q)
{
    char c = *f->p;
    if (c == '\0')
        return -2;
    f->p++;
    if (c == q)
        return -1;
    if (c != '\\')
        return (unsigned char)c;
    c = *f->p;
    if (c == '\0')
        return -2; /* stay on the NUL: callers still look at *f->p */
    f->p++;
    switch (c) {
    case 'n': return '\n';
    case 't': return '\t';
    case 'r': return '\r';
    case 'e': return 27;
    case 'b': return '\b';
    case 'f': return '\f';
    case 'v': return '\v';
    case 's': return ' ';
    case 'd': return 127;
    case '\\':
    case '"':
    case '\'': return (unsigned char)c;
    default:
        if (c >= '0' && c <= '7') {
            int v = c - '0';
            for (int k = 0; k < 2 && *f->p >= '0' && *f->p <= '7'; k++)
                v = v * 8 + (*f->p++ - '0');
            return v > 255 ? -2 : v;
        }
        return -2;
    }
}

/* Atom text of a bare or quoted atom literal at f->p into buf. */
static bool atom_literal(struct fmt *f, char *buf, size_t *len)
{
    size_t n = 0;
    if (*f->p == '\'') {
        f->p++;
        for (;;) {
            int c = lit_char(f, '\'');
            if (c == -1)
                break;
            if (c < 0 || n >= ATOM_MAX_BYTES)
                return false;
            buf[n++] = (char)c;
        }
    } else {
        while (is_alnum_(*f->p)) {
            if (n >= ATOM_MAX_BYTES)
                return false;
            buf[n++] = *f->p++;
        }
    }
    *len = n;
    return true;
}

/* Integer or float literal; *is_float tells which. */
static bool number_literal(struct fmt *f, int64_t *iv, double *dv, bool *is_float)
{
    const char *s = f->p;
    const char *q = s + (*s == '-');
    if (*q < '0' || *q > '9')
        return false;
    while (*q >= '0' && *q <= '9')
        q++;
    if (q[0] == '.' && q[1] >= '0' && q[1] <= '9') {
        char *end;
        errno = 0;
        *dv = strtod(s, &end);
        if (errno)
            return false;
        *is_float = true;
        f->p = end;
        return true;
    }
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end != q)
        return false;
    *iv = v;
    *is_float = false;
    f->p = end;
    return true;
}

/* ---- builder ---- */

struct vec {
    kiln_term *v;
    size_t n, cap;
    kiln_term small[8];
};

static void vec_init(struct vec *v)
{
    v->v = v->small;
    v->n = 0;
    v->cap = 8;
}

static bool vec_push(struct vec *v, kiln_term t)
{
    if (v->n == v->cap) {
        if (v->cap > SIZE_MAX / 2 / sizeof(kiln_term))
            return false;
        size_t cap = v->cap * 2;
        kiln_term *n = kiln_malloc(cap * sizeof *n);
        if (!n)
            return false;
        memcpy(n, v->v, v->n * sizeof *n);
        if (v->v != v->small)
            kiln_free(v->v);
        v->v = n;
        v->cap = cap;
    }
    v->v[v->n++] = t;
    return true;
}

static void vec_free(struct vec *v)
{
    if (v->v != v->small)
        kiln_free(v->v);
}

static kiln_term build(struct fmt *f);

static kiln_term build_directive(struct fmt *f, char d)
{
    va_list *ap = f->ap;
    switch (d) {
    case 'a': return kiln_atom_c(va_arg(*ap, const char *));
    case 'A': {
        kiln_term t = va_arg(*ap, kiln_term);
        return kiln_is_atom(t) ? t : KILN_NONE;
    }
    case 'i': return kiln_int(f->m, va_arg(*ap, int64_t));
    case 'u': return kiln_uint(f->m, va_arg(*ap, uint64_t));
    case 'f': return kiln_float(f->m, va_arg(*ap, double));
    case 's': {
        const char *s = va_arg(*ap, const char *);
        return s ? kiln_string(f->m, s, strlen(s)) : KILN_NONE;
    }
    case 'b': {
        const void *data = va_arg(*ap, const void *);
        size_t len = va_arg(*ap, size_t);
        return kiln_binary(f->m, data, len);
    }
    case 'p': {
        kiln_term t = va_arg(*ap, kiln_term);
        return kiln_is_pid(t) ? t : KILN_NONE;
    }
    case 't': return va_arg(*ap, kiln_term);
    default: fail(f, KILN_EFORMAT); return KILN_NONE;
    }
}

/* Elements up to the closing bracket; for lists, an optional |Tail. */
static bool build_seq(struct fmt *f, char close, struct vec *v, kiln_term *tail)
{
    if (accept(f, close))
        return true;
    for (;;) {
        kiln_term t = build(f);
        if (t == KILN_NONE || !vec_push(v, t)) {
            fail(f, KILN_ENOMEM);
            return false;
        }
        if (accept(f, ','))
            continue;
        if (tail && accept(f, '|')) {
            *tail = build(f);
            if (*tail == KILN_NONE)
                return false;
            if (!accept(f, close)) {
                fail(f, KILN_EFORMAT);
                return false;
            }
            return true;
        }
        if (accept(f, close))
            return true;
        fail(f, KILN_EFORMAT);
        return false;
    }
}

static kiln_term build_string(struct fmt *f)
{
    const char *start = f->p;
    size_t cap = strlen(start) + 1;
    char *buf = kiln_malloc(cap);
    if (!buf) {
        fail(f, KILN_ENOMEM);
        return KILN_NONE;
    }
    size_t n = 0;
    for (;;) {
        int c = lit_char(f, '"');
        if (c == -1)
            break;
        if (c < 0) {
            kiln_free(buf);
            fail(f, KILN_EFORMAT);
            return KILN_NONE;
        }
        buf[n++] = (char)c;
    }
    kiln_term t = kiln_string(f->m, buf, n);
    kiln_free(buf);
    return t;
}

static kiln_term build(struct fmt *f)
{
    skip_ws(f);
    if (f->err)
        return KILN_NONE;
    if (++f->depth > FMT_MAX_DEPTH) {
        fail(f, KILN_EFORMAT);
        return KILN_NONE;
    }
    kiln_term r = KILN_NONE;
    char c = *f->p;
    if (c == '~') {
        char d = f->p[1];
        f->p += d ? 2 : 1;
        r = build_directive(f, d);
    } else if (c == '{' || c == '[') {
        f->p++;
        struct vec v;
        vec_init(&v);
        kiln_term tail = KILN_NIL;
        if (build_seq(f, c == '{' ? '}' : ']', &v, c == '[' ? &tail : NULL))
            r = c == '{' ? kiln_tuple_v(f->m, v.n, v.v) : kiln_list_v(f->m, v.n, v.v, tail);
        vec_free(&v);
    } else if (c == '#' && f->p[1] == '{') {
        f->p += 2;
        struct vec k, v;
        vec_init(&k);
        vec_init(&v);
        bool ok = true;
        if (!accept(f, '}')) {
            for (;;) {
                kiln_term key = build(f);
                skip_ws(f);
                if (key == KILN_NONE || f->p[0] != '=' || f->p[1] != '>') {
                    ok = false;
                    fail(f, KILN_EFORMAT);
                    break;
                }
                f->p += 2;
                kiln_term val = build(f);
                if (val == KILN_NONE || !vec_push(&k, key) || !vec_push(&v, val)) {
                    ok = false;
                    break;
                }
                if (accept(f, ','))
                    continue;
                if (!accept(f, '}')) {
                    ok = false;
                    fail(f, KILN_EFORMAT);
                }
                break;
            }
        }
        if (ok)
            r = kiln_map(f->m, k.n, k.v, v.v);
        vec_free(&k);
        vec_free(&v);
    } else if (c == '"') {
        f->p++;
        r = build_string(f);
    } else if (c == '\'' || (c >= 'a' && c <= 'z')) {
        char buf[ATOM_MAX_BYTES];
        size_t len;
        if (!atom_literal(f, buf, &len) || kiln_atom(buf, len, &r) != KILN_OK) {
            fail(f, KILN_EFORMAT);
            r = KILN_NONE;
        }
    } else if (c == '-' || (c >= '0' && c <= '9')) {
        int64_t iv;
        double dv;
        bool is_float;
        if (!number_literal(f, &iv, &dv, &is_float))
            fail(f, KILN_EFORMAT);
        else
            r = is_float ? kiln_float(f->m, dv) : kiln_int(f->m, iv);
    } else {
        fail(f, KILN_EFORMAT);
    }
    f->depth--;
    return r;
}

kiln_term kiln_vbuild(kiln_msg *m, const char *fmt, va_list ap)
{
    if (!m || !fmt)
        return KILN_NONE;
    va_list aq;
    va_copy(aq, ap);
    struct fmt f = {.p = fmt, .outs = NULL, .ap = &aq, .m = m, .err = 0, .depth = 0, .in_key = false};
    kiln_term t = build(&f);
    skip_ws(&f);
    va_end(aq);
    if (f.err || *f.p != '\0')
        return KILN_NONE;
    return t;
}

kiln_term kiln_build(kiln_msg *m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    kiln_term t = kiln_vbuild(m, fmt, ap);
    va_end(ap);
    return t;
}

/* ---- matcher ---- */

enum out_kind { OUT_TERM, OUT_I64, OUT_U64, OUT_DBL, OUT_TEXT, OUT_BIN };

struct pending {
    enum out_kind kind;
    void *dst, *dst_len;
    union {
        kiln_term t;
        int64_t i;
        uint64_t u;
        double d;
        struct {
            const void *ptr;
            size_t len;
        } bytes;
    } v;
};

struct outs {
    struct pending *v;
    size_t n, cap;
    struct pending small[16];
};

static void pend(struct fmt *f, struct pending p)
{
    struct outs *o = f->outs;
    if (o->n == o->cap) {
        size_t cap = o->cap * 2;
        struct pending *n = cap < SIZE_MAX / sizeof *n ? kiln_malloc(cap * sizeof *n) : NULL;
        if (!n) {
            fail(f, KILN_ENOMEM);
            return;
        }
        memcpy(n, o->v, o->n * sizeof *n);
        if (o->v != o->small)
            kiln_free(o->v);
        o->v = n;
        o->cap = cap;
    }
    o->v[o->n++] = p;
}

static bool match(struct fmt *f, kiln_term t, bool live);

static bool match_directive(struct fmt *f, char d, kiln_term t, bool live)
{
    va_list *ap = f->ap;
    if (f->in_key) {
        fail(f, KILN_EFORMAT);
        return false;
    }
    struct pending p = {.kind = OUT_TERM, .dst = NULL, .dst_len = NULL};
    bool ok = false;
    switch (d) {
    case 'a': {
        p.dst = va_arg(*ap, const char **);
        p.dst_len = va_arg(*ap, size_t *);
        p.kind = OUT_TEXT;
        if (live && kiln_is_atom(t)) {
            p.v.bytes.ptr = kiln_atom_text(t, &p.v.bytes.len);
            ok = p.v.bytes.ptr != NULL;
        }
        break;
    }
    case 'A':
    case 'p':
    case 't':
        p.dst = va_arg(*ap, kiln_term *);
        p.v.t = t;
        ok = live && (d == 't' || (d == 'A' ? kiln_is_atom(t) : kiln_is_pid(t)));
        break;
    case 'i':
        p.dst = va_arg(*ap, int64_t *);
        p.kind = OUT_I64;
        ok = live && kiln_get_int64(t, &p.v.i) == KILN_OK;
        break;
    case 'u':
        p.dst = va_arg(*ap, uint64_t *);
        p.kind = OUT_U64;
        ok = live && kiln_get_uint64(t, &p.v.u) == KILN_OK;
        break;
    case 'f':
        p.dst = va_arg(*ap, double *);
        p.kind = OUT_DBL;
        ok = live && kiln_get_double(t, &p.v.d) == KILN_OK;
        break;
    case 'b': {
        p.dst = va_arg(*ap, const uint8_t **);
        p.dst_len = va_arg(*ap, size_t *);
        p.kind = OUT_BIN;
        const uint8_t *data = NULL;
        ok = live && kiln_get_binary(t, &data, &p.v.bytes.len) == KILN_OK;
        p.v.bytes.ptr = data;
        break;
    }
    default: fail(f, KILN_EFORMAT); return false;
    }
    if (ok)
        pend(f, p);
    return ok;
}

static bool match_list(struct fmt *f, kiln_term t, bool live)
{
    if (accept(f, ']'))
        return live && t == KILN_NIL;
    bool ok = live;
    kiln_term cur = t;
    for (;;) {
        bool here = ok && kiln_is_cons(cur);
        ok = match(f, here ? kiln_hd(cur) : KILN_NONE, here) && here;
        if (here)
            cur = kiln_tl(cur);
        if (f->err)
            return false;
        if (accept(f, ','))
            continue;
        if (accept(f, '|')) {
            ok = match(f, cur, ok) && ok;
            if (!accept(f, ']'))
                fail(f, KILN_EFORMAT);
            return ok;
        }
        if (accept(f, ']'))
            return ok && cur == KILN_NIL;
        fail(f, KILN_EFORMAT);
        return false;
    }
}

static bool match_tuple(struct fmt *f, kiln_term t, bool live)
{
    bool ok = live && kiln_is_tuple(t);
    size_t arity = ok ? kiln_tuple_arity(t) : 0, i = 0;
    if (accept(f, '}'))
        return ok && arity == 0;
    for (;; i++) {
        bool here = ok && i < arity;
        ok = match(f, here ? kiln_tuple_get(t, i) : KILN_NONE, here) && here;
        if (f->err)
            return false;
        if (accept(f, ','))
            continue;
        if (accept(f, '}'))
            return ok && i + 1 == arity;
        fail(f, KILN_EFORMAT);
        return false;
    }
}

/* Map patterns match maps that have at least the given keys (as in
 * Erlang). Keys must be literals; each is tried against the map's keys. */
static bool match_map(struct fmt *f, kiln_term t, bool live)
{
    bool ok = live && kiln_is_map(t);
    /* A map inside a key is part of that key: its values take no
     * directives either (the key is parsed again for each map key). */
    bool in_key = f->in_key;
    if (accept(f, '}'))
        return ok;
    for (;;) {
        skip_ws(f);
        const char *key_start = f->p;
        f->in_key = true;
        match(f, KILN_NONE, false);
        f->in_key = in_key;
        if (f->err)
            return false;
        const char *key_end = f->p;
        kiln_term value = KILN_NONE;
        if (ok) {
            size_t n = kiln_map_size(t), i;
            for (i = 0; i < n; i++) {
                f->p = key_start;
                f->in_key = true;
                bool hit = match(f, kiln_map_key(t, i), true);
                f->in_key = in_key;
                if (hit)
                    break;
            }
            f->p = key_end;
            ok = i < n;
            if (ok)
                value = kiln_map_value(t, i);
        }
        skip_ws(f);
        if (f->p[0] != '=' || f->p[1] != '>') {
            fail(f, KILN_EFORMAT);
            return false;
        }
        f->p += 2;
        ok = match(f, value, ok) && ok;
        if (f->err)
            return false;
        if (accept(f, ','))
            continue;
        if (accept(f, '}'))
            return ok;
        fail(f, KILN_EFORMAT);
        return false;
    }
}

static bool match_string(struct fmt *f, kiln_term t, bool live)
{
    bool ok = live;
    kiln_term cur = t;
    for (;;) {
        int c = lit_char(f, '"');
        if (c == -1)
            break;
        if (c < 0) {
            fail(f, KILN_EFORMAT);
            return false;
        }
        if (ok) {
            ok = kiln_is_cons(cur) && kiln_hd(cur) == kiln_small(c);
            if (ok)
                cur = kiln_tl(cur);
        }
    }
    return ok && cur == KILN_NIL;
}

static bool match(struct fmt *f, kiln_term t, bool live)
{
    skip_ws(f);
    if (f->err)
        return false;
    if (++f->depth > FMT_MAX_DEPTH) {
        fail(f, KILN_EFORMAT);
        return false;
    }
    if (t == KILN_NONE)
        live = false;
    bool r = false;
    char c = *f->p;
    if (c == '~') {
        char d = f->p[1];
        f->p += d ? 2 : 1;
        r = match_directive(f, d, t, live);
    } else if (c == '_') {
        while (is_alnum_(*f->p))
            f->p++;
        r = live;
    } else if (c == '{') {
        f->p++;
        r = match_tuple(f, t, live);
    } else if (c == '[') {
        f->p++;
        r = match_list(f, t, live);
    } else if (c == '#' && f->p[1] == '{') {
        f->p += 2;
        r = match_map(f, t, live);
    } else if (c == '"') {
        f->p++;
        r = match_string(f, t, live);
    } else if (c == '\'' || (c >= 'a' && c <= 'z')) {
        char buf[ATOM_MAX_BYTES];
        size_t len, tlen;
        if (!atom_literal(f, buf, &len)) {
            fail(f, KILN_EFORMAT);
        } else if (live && kiln_is_atom(t)) {
            const char *text = kiln_atom_text(t, &tlen);
            r = text && tlen == len && memcmp(text, buf, len) == 0;
        }
    } else if (c == '-' || (c >= '0' && c <= '9')) {
        int64_t iv, tv;
        double dv, td;
        bool is_float;
        if (!number_literal(f, &iv, &dv, &is_float))
            fail(f, KILN_EFORMAT);
        else if (live && is_float)
            r = kiln_get_double(t, &td) == KILN_OK && td == dv;
        else if (live)
            r = kiln_get_int64(t, &tv) == KILN_OK && tv == iv;
    } else {
        fail(f, KILN_EFORMAT);
    }
    f->depth--;
    return r && !f->err;
}

int kiln_vmatch(kiln_term t, const char *fmt, va_list ap)
{
    if (!fmt)
        return KILN_EFORMAT;
    va_list aq;
    va_copy(aq, ap);
    struct {
        struct fmt f;
        struct outs outs;
    } c;
    c.outs.v = c.outs.small;
    c.outs.n = 0;
    c.outs.cap = sizeof c.outs.small / sizeof c.outs.small[0];
    c.f = (struct fmt){.p = fmt, .outs = &c.outs, .ap = &aq, .m = NULL, .err = 0, .depth = 0, .in_key = false};
    bool ok = match(&c.f, t, true);
    skip_ws(&c.f);
    if (!c.f.err && *c.f.p != '\0')
        c.f.err = KILN_EFORMAT;
    va_end(aq);
    int rc = c.f.err ? c.f.err : ok ? KILN_OK : KILN_ENOMATCH;
    if (rc == KILN_OK) {
        for (size_t i = 0; i < c.outs.n; i++) {
            struct pending *p = &c.outs.v[i];
            if (!p->dst)
                continue;
            switch (p->kind) {
            case OUT_TERM: *(kiln_term *)p->dst = p->v.t; break;
            case OUT_I64: *(int64_t *)p->dst = p->v.i; break;
            case OUT_U64: *(uint64_t *)p->dst = p->v.u; break;
            case OUT_DBL: *(double *)p->dst = p->v.d; break;
            case OUT_TEXT:
                *(const char **)p->dst = p->v.bytes.ptr;
                if (p->dst_len)
                    *(size_t *)p->dst_len = p->v.bytes.len;
                break;
            case OUT_BIN:
                *(const uint8_t **)p->dst = p->v.bytes.ptr;
                if (p->dst_len)
                    *(size_t *)p->dst_len = p->v.bytes.len;
                break;
            }
        }
    }
    if (c.outs.v != c.outs.small)
        kiln_free(c.outs.v);
    return rc;
}

int kiln_match(kiln_term t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = kiln_vmatch(t, fmt, ap);
    va_end(ap);
    return rc;
}
