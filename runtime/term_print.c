/* Printing terms the way erl's io:format("~p") does (Latin-1 printable
 * range, no line breaks), into a caller buffer with snprintf semantics.
 * Output is UTF-8: characters 160..255 that Erlang prints literally are
 * encoded, as are atom characters up to 255; higher atom characters are
 * escaped \x{...} as ~p does. Compound terms are walked with an explicit
 * stack so that deep or long terms cannot overflow the C stack. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "bignum.h"
#include "term_layout.h"

struct out {
    char *buf;
    size_t size, len;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (o->len < o->size) {
        size_t room = o->size - o->len;
        memcpy(o->buf + o->len, s, n < room ? n : room);
    }
    o->len += n;
}

static void puts_(struct out *o, const char *s) { put(o, s, strlen(s)); }
static void putch(struct out *o, char c) { put(o, &c, 1); }

static void putf(struct out *o, const char *fmt, unsigned long long v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, fmt, v);
    put(o, tmp, (size_t)n);
}

static void put_cp(struct out *o, uint32_t c)
{
    char b[4];
    if (c < 0x80) {
        putch(o, (char)c);
    } else if (c < 0x800) {
        b[0] = (char)(0xC0 | c >> 6);
        b[1] = (char)(0x80 | (c & 0x3F));
        put(o, b, 2);
    } else if (c < 0x10000) {
        b[0] = (char)(0xE0 | c >> 12);
        b[1] = (char)(0x80 | (c >> 6 & 0x3F));
        b[2] = (char)(0x80 | (c & 0x3F));
        put(o, b, 3);
    } else {
        b[0] = (char)(0xF0 | c >> 18);
        b[1] = (char)(0x80 | (c >> 12 & 0x3F));
        b[2] = (char)(0x80 | (c >> 6 & 0x3F));
        b[3] = (char)(0x80 | (c & 0x3F));
        put(o, b, 4);
    }
}

/* io_lib's string_char/4 in latin1 mode. */
static void put_qchar(struct out *o, uint32_t c, char q)
{
    if (c == (uint32_t)q || c == '\\') {
        putch(o, '\\');
        putch(o, (char)c);
    } else if (c >= 32 && c <= 126) {
        putch(o, (char)c);
    } else if (c >= 160 && c <= 255) {
        put_cp(o, c);
    } else {
        const char *esc = NULL;
        switch (c) {
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\v': esc = "\\v"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        case 27: esc = "\\e"; break;
        case 127: esc = "\\d"; break;
        default: break;
        }
        if (esc)
            puts_(o, esc);
        else if (c < 160)
            putf(o, "\\%03llo", c);
        else
            putf(o, "\\x{%llX}", c);
    }
}

static bool printable_char(uint64_t c)
{
    return (c >= 32 && c <= 126) || (c >= 160 && c <= 255) || (c >= 8 && c <= 13) || c == 27;
}

/* Decodes one UTF-8 character of atom text (the table only holds valid text). */
static uint32_t next_cp(const unsigned char *s, size_t len, size_t *i)
{
    uint32_t c = s[(*i)++];
    int k = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
    if (k)
        c &= 0x3Fu >> k;
    while (k-- > 0 && *i < len)
        c = c << 6 | (s[(*i)++] & 0x3F);
    return c;
}

static bool is_lower(uint32_t c) { return (c >= 'a' && c <= 'z') || (c >= 223 && c <= 255 && c != 247); }

static bool is_name_char(uint32_t c)
{
    return is_lower(c) || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '@' ||
           (c >= 192 && c <= 222 && c != 215);
}

static bool reserved_word(const char *s, size_t len)
{
    static const char *const words[] = {"after", "and", "andalso", "band", "begin", "bnot", "bor",
                                        "bsl", "bsr", "bxor", "case", "catch", "cond", "div",
                                        "end", "fun", "if", "let", "not", "of", "or", "orelse",
                                        "receive", "rem", "try", "when", "xor"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        if (strlen(words[i]) == len && memcmp(words[i], s, len) == 0)
            return true;
    }
    return false;
}

static void put_atom(struct out *o, kiln_term a)
{
    size_t len;
    const char *s = kiln_atom_text(a, &len);
    if (!s) {
        puts_(o, "'$bad_atom'");
        return;
    }
    const unsigned char *u = (const unsigned char *)s;
    bool quote = len == 0 || reserved_word(s, len);
    /* Unquoted: a lowercase letter, then letters, digits, _ and @. */
    bool first = true;
    for (size_t i = 0; i < len && !quote; first = false) {
        uint32_t c = next_cp(u, len, &i);
        quote = first ? !is_lower(c) : !is_name_char(c);
    }
    if (!quote) {
        put(o, s, len);
        return;
    }
    putch(o, '\'');
    for (size_t i = 0; i < len;)
        put_qchar(o, next_cp(u, len, &i), '\'');
    putch(o, '\'');
}

/* Erlang's shortest round-trip float form (io_lib_format:fwrite_g). */
static void put_float(struct out *o, double d)
{
    if (d == 0) {
        puts_(o, signbit(d) ? "-0.0" : "0.0");
        return;
    }
    char e[40];
    for (int p = 0; p <= 17; p++) {
        snprintf(e, sizeof e, "%.*e", p, d);
        if (strtod(e, NULL) == d)
            break;
    }
    char digits[24];
    size_t nd = 0;
    const char *c = e;
    if (*c == '-') {
        putch(o, '-');
        c++;
    }
    for (; *c && *c != 'e'; c++) {
        if (*c >= '0' && *c <= '9' && nd < sizeof digits - 1)
            digits[nd++] = *c;
    }
    long exp10 = *c == 'e' ? strtol(c + 1, NULL, 10) : 0;
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    long place = exp10 + 1, L = (long)nd;
    if (place == 0) {
        puts_(o, "0.");
        put(o, digits, nd);
        return;
    }
    if (place > 0 && place < L) {
        put(o, digits, (size_t)place);
        putch(o, '.');
        put(o, digits + place, nd - (size_t)place);
        return;
    }
    char expl[24];
    int explen = snprintf(expl, sizeof expl, "%ld", place - 1);
    long cost = explen + 1 + (L == 1 ? 2 : 1);
    /* Past 2^53 erl always uses the exponent form (doubles there are all
     * integers, and trailing zeros would suggest digits that are not there). */
    bool plain = place < 0 ? 2 - place <= cost : place - L + 2 <= cost && fabs(d) < 9007199254740992.0;
    if (plain && place < 0) {
        puts_(o, "0.");
        for (long i = 0; i < -place; i++)
            putch(o, '0');
        put(o, digits, nd);
    } else if (plain) {
        put(o, digits, nd);
        for (long i = 0; i < place - L; i++)
            putch(o, '0');
        puts_(o, ".0");
    } else {
        putch(o, digits[0]);
        putch(o, '.');
        if (nd == 1)
            putch(o, '0');
        else
            put(o, digits + 1, nd - 1);
        putch(o, 'e');
        put(o, expl, (size_t)explen);
    }
}

static void put_int(struct out *o, kiln_term t)
{
    if (kiln_is_small(t)) {
        int64_t v = kiln_small_value(t);
        if (v < 0) {
            putch(o, '-');
            putf(o, "%llu", -(uint64_t)v);
        } else {
            putf(o, "%llu", (uint64_t)v);
        }
        return;
    }
    bool neg;
    const uint64_t *d;
    size_t n;
    kiln_get_bigint(t, &neg, &d, &n, NULL);
    size_t need = kiln_int_to_decimal(NULL, 0, neg, d, n);
    char *tmp = need != SIZE_MAX ? kiln_malloc(need + 1) : NULL;
    if (!tmp) {
        puts_(o, "...");
        return;
    }
    kiln_int_to_decimal(tmp, need + 1, neg, d, n);
    put(o, tmp, need);
    kiln_free(tmp);
}

static bool printable_list(kiln_term t)
{
    if (!kiln_is_cons(t))
        return false;
    for (; kiln_is_cons(t); t = kiln_tl(t)) {
        kiln_term h = kiln_hd(t);
        if (!kiln_is_small(h) || !printable_char((uint64_t)kiln_small_value(h)))
            return false;
    }
    return t == KILN_NIL;
}

static void put_bits(struct out *o, kiln_term t)
{
    const struct kiln_binary_box *b = kiln_binary_box(t);
    size_t whole = (size_t)(b->nbits / 8);
    unsigned rest = (unsigned)(b->nbits % 8);
    bool text = whole > 0 && rest == 0;
    for (size_t i = 0; i < whole && text; i++)
        text = printable_char(b->data[i]);
    puts_(o, "<<");
    if (text) {
        putch(o, '"');
        for (size_t i = 0; i < whole; i++)
            put_qchar(o, b->data[i], '"');
        putch(o, '"');
    } else {
        for (size_t i = 0; i < whole; i++) {
            if (i)
                putch(o, ',');
            putf(o, "%llu", b->data[i]);
        }
        if (rest) {
            if (whole)
                putch(o, ',');
            putf(o, "%llu", (unsigned)b->data[whole] >> (8 - rest));
            putf(o, ":%llu", rest);
        }
    }
    puts_(o, ">>");
}

static bool is_local_node(kiln_term node, uint32_t creation)
{
    uint32_t c;
    kiln_term local = kiln_term_local_node(&c);
    return node == local && (creation == c || creation == 0 || c == 0);
}

static void put_node(struct out *o, kiln_term node, uint32_t creation)
{
    if (is_local_node(node, creation)) {
        putch(o, '0');
    } else {
        size_t len;
        const char *s = kiln_atom_text(node, &len);
        if (s)
            put(o, s, len);
    }
}

static void put_leaf(struct out *o, kiln_term t)
{
    switch (kiln_type_of(t)) {
    case KILN_T_INTEGER: put_int(o, t); return;
    case KILN_T_FLOAT: {
        double d;
        kiln_get_double(t, &d);
        put_float(o, d);
        return;
    }
    case KILN_T_ATOM: put_atom(o, t); return;
    case KILN_T_NIL: puts_(o, "[]"); return;
    case KILN_T_BITSTRING: put_bits(o, t); return;
    case KILN_T_PID: {
        kiln_term node = KILN_NONE;
        uint32_t id = 0, serial = 0, creation = 0;
        kiln_get_ext_pid(t, &node, &id, &serial, &creation);
        putch(o, '<');
        if (kiln_is_local_pid(t))
            putch(o, '0');
        else
            put_node(o, node, creation);
        putf(o, ".%llu", id);
        putf(o, ".%llu>", serial);
        return;
    }
    case KILN_T_PORT: {
        kiln_term node;
        uint64_t id;
        uint32_t creation;
        kiln_get_port(t, &node, &id, &creation);
        puts_(o, "#Port<");
        put_node(o, node, creation);
        putf(o, ".%llu>", id);
        return;
    }
    case KILN_T_REF: {
        kiln_term node;
        uint32_t creation, w[KILN_REF_MAX_WORDS];
        size_t n;
        kiln_get_ref(t, &node, &creation, w, &n);
        puts_(o, "#Ref<");
        put_node(o, node, creation);
        for (size_t i = n; i-- > 0;)
            putf(o, ".%llu", w[i]);
        putch(o, '>');
        return;
    }
    case KILN_T_FUN:
        if (kiln_is_box_of(t, KILN_SUB_EXPORT)) {
            kiln_term mod, fun;
            unsigned arity;
            kiln_get_export(t, &mod, &fun, &arity);
            puts_(o, "fun ");
            put_atom(o, mod);
            putch(o, ':');
            put_atom(o, fun);
            putf(o, "/%llu", arity);
        } else {
            const struct kiln_fun_box *f = kiln_fun_box(t);
            puts_(o, "#Fun<");
            if (f->module != KILN_NONE)
                put_atom(o, f->module);
            else
                putch(o, '?');
            putf(o, ".%llu", f->index);
            if (f->old_uniq < 0) {
                putch(o, '.');
                putch(o, '-');
                putf(o, "%llu>", -(uint64_t)f->old_uniq);
            } else {
                putf(o, ".%llu>", (uint64_t)f->old_uniq);
            }
        }
        return;
    default: puts_(o, "#None"); return;
    }
}

enum task_kind { TK_TERM, TK_STR, TK_TUPLE, TK_LIST, TK_MAP };

struct task {
    enum task_kind kind;
    kiln_term t;
    size_t i;
    const char *s;
};

struct tasks {
    struct task *v;
    size_t n, cap;
    bool failed;
    struct task small[32];
};

static void push(struct tasks *s, enum task_kind kind, kiln_term t, size_t i, const char *str)
{
    if (s->failed)
        return;
    if (s->n == s->cap) {
        size_t cap = s->cap * 2;
        struct task *v = cap < SIZE_MAX / sizeof *v ? kiln_malloc(cap * sizeof *v) : NULL;
        if (!v) {
            s->failed = true;
            return;
        }
        memcpy(v, s->v, s->n * sizeof *v);
        if (s->v != s->small)
            kiln_free(s->v);
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = (struct task){kind, t, i, str};
}

static void print_term(struct out *o, kiln_term root)
{
    struct tasks s = {.v = NULL, .n = 0, .cap = 32, .failed = false};
    s.v = s.small;
    push(&s, TK_TERM, root, 0, NULL);
    while (s.n > 0 && !s.failed) {
        struct task k = s.v[--s.n];
        kiln_term t = k.t;
        switch (k.kind) {
        case TK_STR: puts_(o, k.s); break;
        case TK_TERM:
            if (kiln_is_tuple(t)) {
                putch(o, '{');
                if (kiln_tuple_arity(t) == 0) {
                    putch(o, '}');
                } else {
                    push(&s, TK_TUPLE, t, 1, NULL);
                    push(&s, TK_TERM, kiln_tuple_get(t, 0), 0, NULL);
                }
            } else if (kiln_is_map(t)) {
                puts_(o, "#{");
                push(&s, TK_MAP, t, 0, NULL);
            } else if (kiln_is_cons(t)) {
                if (printable_list(t)) {
                    putch(o, '"');
                    for (; kiln_is_cons(t); t = kiln_tl(t))
                        put_qchar(o, (uint32_t)kiln_small_value(kiln_hd(t)), '"');
                    putch(o, '"');
                } else {
                    putch(o, '[');
                    push(&s, TK_LIST, kiln_tl(t), 0, NULL);
                    push(&s, TK_TERM, kiln_hd(t), 0, NULL);
                }
            } else {
                put_leaf(o, t);
            }
            break;
        case TK_TUPLE:
            if (k.i == kiln_tuple_arity(t)) {
                putch(o, '}');
            } else {
                putch(o, ',');
                push(&s, TK_TUPLE, t, k.i + 1, NULL);
                push(&s, TK_TERM, kiln_tuple_get(t, k.i), 0, NULL);
            }
            break;
        case TK_LIST:
            if (kiln_is_cons(t)) {
                putch(o, ',');
                push(&s, TK_LIST, kiln_tl(t), 0, NULL);
                push(&s, TK_TERM, kiln_hd(t), 0, NULL);
            } else if (t == KILN_NIL) {
                putch(o, ']');
            } else {
                putch(o, '|');
                push(&s, TK_STR, KILN_NIL, 0, "]");
                push(&s, TK_TERM, t, 0, NULL);
            }
            break;
        case TK_MAP:
            if (k.i == kiln_map_size(t)) {
                putch(o, '}');
            } else {
                if (k.i)
                    putch(o, ',');
                push(&s, TK_MAP, t, k.i + 1, NULL);
                push(&s, TK_TERM, kiln_map_value(t, k.i), 0, NULL);
                push(&s, TK_STR, KILN_NIL, 0, " => ");
                push(&s, TK_TERM, kiln_map_key(t, k.i), 0, NULL);
            }
            break;
        }
    }
    if (s.failed)
        puts_(o, "...");
    if (s.v != s.small)
        kiln_free(s.v);
}

size_t kiln_term_print(char *buf, size_t size, kiln_term t)
{
    struct out o = {buf, size, 0};
    print_term(&o, t);
    if (size > 0)
        buf[o.len < size ? o.len : size - 1] = '\0';
    return o.len;
}

int kiln_term_fprint(FILE *f, kiln_term t)
{
    if (!f)
        return KILN_EINVAL;
    size_t n = kiln_term_print(NULL, 0, t);
    if (n == SIZE_MAX)
        return KILN_ENOMEM;
    char *buf = kiln_malloc(n + 1);
    if (!buf)
        return KILN_ENOMEM;
    kiln_term_print(buf, n + 1, t);
    size_t w = fwrite(buf, 1, n, f);
    kiln_free(buf);
    return w == n ? KILN_OK : KILN_ESYS;
}
