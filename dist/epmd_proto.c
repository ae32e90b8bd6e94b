/* EPMD wire format and the embedded server's request handling; see
 * epmd_proto.h. Pure functions over byte buffers: the owner does the I/O. */
#include "dist/epmd_proto.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "runtime/alloc.h"

static inline uint16_t get16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t get32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static inline void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Characters in a well-formed UTF-8 string (no overlongs, surrogates or
 * code points past U+10FFFF), or -1. */
static long utf8_chars(const uint8_t *p, size_t n)
{
    long chars = 0;
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            chars++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            k = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3;
            cp = c & 0x07;
        } else {
            return -1;
        }
        if (n - i - 1 < k)
            return -1;
        for (size_t j = 1; j <= k; j++) {
            if ((p[i + j] & 0xC0) != 0x80)
                return -1;
            cp = (cp << 6) | (p[i + j] & 0x3F);
        }
        if ((k == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return -1;
        i += k + 1;
        chars++;
    }
    return chars;
}

int kiln_epmd_check_name(const uint8_t *name, size_t len)
{
    if (!name || len == 0 || len > KILN_EPMD_MAX_NAME)
        return KILN_EBADNODE;
    /* No control characters (NUL included): the NAMES reply is a line per
     * node, and a newline in one name breaks it for every client. */
    for (size_t i = 0; i < len; i++)
        if (name[i] < 0x20 || name[i] == 0x7f)
            return KILN_EBADNODE;
    long chars = utf8_chars(name, len);
    if (chars < 0)
        return KILN_EBADUTF8;
    return chars > (long)KILN_EPMD_MAX_NAME_CHARS ? KILN_EBADNODE : KILN_OK;
}

/* ---- requests ---- */

/* Every encoder: compute the size, report it, then write only if it fits. */
static int fits(size_t need, size_t cap, size_t *len)
{
    *len = need;
    return need <= cap ? KILN_OK : KILN_ENOSPC;
}

int kiln_epmd_enc_alive2_req(uint8_t *buf, size_t cap, const kiln_epmd_node *n, size_t *len)
{
    if (!n || !len || (n->extra_len && !n->extra) || n->extra_len > KILN_EPMD_MAX_EXTRA)
        return KILN_EINVAL;
    int rc = kiln_epmd_check_name(n->name, n->name_len);
    if (rc != KILN_OK)
        return rc;
    size_t body = 13 + n->name_len + n->extra_len;
    if ((rc = fits(2 + body, cap, len)) != KILN_OK)
        return rc;
    put16(buf, (uint16_t)body);
    buf[2] = KILN_EPMD_ALIVE2_REQ;
    put16(buf + 3, n->port);
    buf[5] = n->type;
    buf[6] = n->protocol;
    put16(buf + 7, n->highest);
    put16(buf + 9, n->lowest);
    put16(buf + 11, (uint16_t)n->name_len);
    memcpy(buf + 13, n->name, n->name_len);
    put16(buf + 13 + n->name_len, (uint16_t)n->extra_len);
    if (n->extra_len)
        memcpy(buf + 15 + n->name_len, n->extra, n->extra_len);
    return KILN_OK;
}

static int enc_code_name(uint8_t *buf, size_t cap, uint8_t code, const uint8_t *name, size_t nlen,
                         size_t *len)
{
    if (!len)
        return KILN_EINVAL;
    int rc = kiln_epmd_check_name(name, nlen);
    if (rc != KILN_OK)
        return rc;
    if ((rc = fits(3 + nlen, cap, len)) != KILN_OK)
        return rc;
    put16(buf, (uint16_t)(1 + nlen));
    buf[2] = code;
    memcpy(buf + 3, name, nlen);
    return KILN_OK;
}

int kiln_epmd_enc_port_please2_req(uint8_t *buf, size_t cap, const uint8_t *name, size_t name_len,
                                   size_t *len)
{
    return enc_code_name(buf, cap, KILN_EPMD_PORT_PLEASE2_REQ, name, name_len, len);
}

int kiln_epmd_enc_stop_req(uint8_t *buf, size_t cap, const uint8_t *name, size_t name_len, size_t *len)
{
    return enc_code_name(buf, cap, KILN_EPMD_STOP_REQ, name, name_len, len);
}

int kiln_epmd_enc_simple_req(uint8_t *buf, size_t cap, uint8_t code, size_t *len)
{
    if (!len || (code != KILN_EPMD_NAMES_REQ && code != KILN_EPMD_DUMP_REQ && code != KILN_EPMD_KILL_REQ))
        return KILN_EINVAL;
    int rc = fits(3, cap, len);
    if (rc != KILN_OK)
        return rc;
    put16(buf, 1);
    buf[2] = code;
    return KILN_OK;
}

/* PORT_PLEASE2 and STOP name: the rest of the body, minus one trailing NUL
 * (epmd strips it; old clients sent C strings). */
static int parse_name_body(const uint8_t *b, size_t n, kiln_epmd_req *req)
{
    if (n > 0 && b[n - 1] == 0)
        n--;
    int rc = kiln_epmd_check_name(b, n);
    if (rc != KILN_OK)
        return rc;
    req->name = b;
    req->name_len = n;
    return KILN_OK;
}

static int parse_alive2(const uint8_t *b, size_t n, kiln_epmd_req *req)
{
    /* code, port, type, proto, high, low, Nlen: 11 bytes, then the name
     * and Elen. A body without room for one name byte and Elen is short. */
    if (n < 14)
        return KILN_ETRUNCATED;
    kiln_epmd_node *nd = &req->node;
    nd->port = get16(b + 1);
    nd->type = b[3];
    nd->protocol = b[4];
    nd->highest = get16(b + 5);
    nd->lowest = get16(b + 7);
    size_t nlen = get16(b + 9);
    if (nlen + 13 > n)
        return KILN_EBADLENGTH;
    size_t elen = get16(b + 11 + nlen);
    if (elen + nlen + 13 > n)
        return KILN_EBADLENGTH;
    if (elen > KILN_EPMD_MAX_EXTRA)
        return KILN_EINVAL;
    int rc = kiln_epmd_check_name(b + 11, nlen);
    if (rc != KILN_OK)
        return rc;
    nd->name = b + 11;
    nd->name_len = nlen;
    nd->extra = b + 13 + nlen;
    nd->extra_len = elen;
    return KILN_OK;
}

int kiln_epmd_parse_req(const uint8_t *buf, size_t len, kiln_epmd_req *req, size_t *used)
{
    *used = 0;
    if (len < 2)
        return KILN_EPMD_NEED_MORE;
    size_t body = get16(buf);
    if (body == 0)
        return KILN_EPROTO;
    if (body > KILN_EPMD_MAX_REQ)
        return KILN_ETOOBIG;
    if (len - 2 < body)
        return KILN_EPMD_NEED_MORE;
    const uint8_t *b = buf + 2;
    memset(req, 0, sizeof *req);
    req->code = b[0];
    int rc;
    switch (b[0]) {
    case KILN_EPMD_ALIVE2_REQ: rc = parse_alive2(b, body, req); break;
    case KILN_EPMD_PORT_PLEASE2_REQ:
    case KILN_EPMD_STOP_REQ: rc = parse_name_body(b + 1, body - 1, req); break;
    case KILN_EPMD_NAMES_REQ:
    case KILN_EPMD_DUMP_REQ:
    case KILN_EPMD_KILL_REQ: rc = KILN_OK; break; /* epmd ignores any further bytes */
    default: rc = KILN_EBADREQ; break;
    }
    if (rc == KILN_OK)
        *used = 2 + body;
    return rc;
}

/* ---- responses ---- */

int kiln_epmd_enc_alive2_resp(uint8_t *buf, size_t cap, bool x, uint8_t result, uint32_t creation,
                              size_t *len)
{
    if (!len || (!x && creation > 0xFFFF))
        return KILN_EINVAL;
    int rc = fits(x ? 6 : 4, cap, len);
    if (rc != KILN_OK)
        return rc;
    buf[0] = x ? KILN_EPMD_ALIVE2_X_RESP : KILN_EPMD_ALIVE2_RESP;
    buf[1] = result;
    if (x)
        put32(buf + 2, creation);
    else
        put16(buf + 2, (uint16_t)creation);
    return KILN_OK;
}

int kiln_epmd_enc_port2_resp(uint8_t *buf, size_t cap, const kiln_epmd_node *n, size_t *len)
{
    if (!len)
        return KILN_EINVAL;
    int rc;
    if (!n) {
        if ((rc = fits(2, cap, len)) != KILN_OK)
            return rc;
        buf[0] = KILN_EPMD_PORT2_RESP;
        buf[1] = 1;
        return KILN_OK;
    }
    if ((n->extra_len && !n->extra) || n->extra_len > KILN_EPMD_MAX_EXTRA)
        return KILN_EINVAL;
    if ((rc = kiln_epmd_check_name(n->name, n->name_len)) != KILN_OK)
        return rc;
    if ((rc = fits(14 + n->name_len + n->extra_len, cap, len)) != KILN_OK)
        return rc;
    buf[0] = KILN_EPMD_PORT2_RESP;
    buf[1] = 0;
    put16(buf + 2, n->port);
    buf[4] = n->type;
    buf[5] = n->protocol;
    put16(buf + 6, n->highest);
    put16(buf + 8, n->lowest);
    put16(buf + 10, (uint16_t)n->name_len);
    memcpy(buf + 12, n->name, n->name_len);
    /* Elen, then Extra (ergo writes them the other way round). */
    put16(buf + 12 + n->name_len, (uint16_t)n->extra_len);
    if (n->extra_len)
        memcpy(buf + 14 + n->name_len, n->extra, n->extra_len);
    return KILN_OK;
}

int kiln_epmd_enc_names_header(uint8_t *buf, size_t cap, uint32_t epmd_port, size_t *len)
{
    if (!len)
        return KILN_EINVAL;
    int rc = fits(4, cap, len);
    if (rc == KILN_OK)
        put32(buf, epmd_port);
    return rc;
}

int kiln_epmd_enc_names_line(uint8_t *buf, size_t cap, const uint8_t *name, size_t name_len,
                             uint16_t port, size_t *len)
{
    if (!len)
        return KILN_EINVAL;
    int rc = kiln_epmd_check_name(name, name_len);
    if (rc != KILN_OK)
        return rc;
    char tail[32];
    int tn = snprintf(tail, sizeof tail, " at port %u\n", (unsigned)port);
    if ((rc = fits(5 + name_len + (size_t)tn, cap, len)) != KILN_OK)
        return rc;
    memcpy(buf, "name ", 5);
    memcpy(buf + 5, name, name_len);
    memcpy(buf + 5 + name_len, tail, (size_t)tn);
    return KILN_OK;
}

int kiln_epmd_parse_alive2_resp(const uint8_t *buf, size_t len, kiln_epmd_alive2_resp *out, size_t *used)
{
    *used = 0;
    if (len < 1)
        return KILN_EPMD_NEED_MORE;
    bool x = buf[0] == KILN_EPMD_ALIVE2_X_RESP;
    if (!x && buf[0] != KILN_EPMD_ALIVE2_RESP)
        return KILN_EPROTO;
    size_t need = x ? 6 : 4;
    if (len < need)
        return KILN_EPMD_NEED_MORE;
    out->x = x;
    out->result = buf[1];
    out->creation = x ? get32(buf + 2) : get16(buf + 2);
    *used = need;
    return KILN_OK;
}

int kiln_epmd_parse_port2_resp(const uint8_t *buf, size_t len, kiln_epmd_port2_resp *out, size_t *used)
{
    *used = 0;
    if (len < 1)
        return KILN_EPMD_NEED_MORE;
    if (buf[0] != KILN_EPMD_PORT2_RESP)
        return KILN_EPROTO;
    if (len < 2)
        return KILN_EPMD_NEED_MORE;
    memset(out, 0, sizeof *out);
    out->result = buf[1];
    if (buf[1] != 0) {
        *used = 2;
        return KILN_OK;
    }
    if (len < 12)
        return KILN_EPMD_NEED_MORE;
    size_t nlen = get16(buf + 10);
    if (nlen == 0 || nlen > KILN_EPMD_MAX_NAME)
        return KILN_EBADNODE;
    if (len < 14 + nlen)
        return KILN_EPMD_NEED_MORE;
    size_t elen = get16(buf + 12 + nlen);
    if (elen > KILN_EPMD_MAX_EXTRA)
        return KILN_EINVAL;
    if (len < 14 + nlen + elen)
        return KILN_EPMD_NEED_MORE;
    kiln_epmd_node *n = &out->node;
    n->port = get16(buf + 2);
    n->type = buf[4];
    n->protocol = buf[5];
    n->highest = get16(buf + 6);
    n->lowest = get16(buf + 8);
    n->name = buf + 12;
    n->name_len = nlen;
    n->extra = buf + 14 + nlen;
    n->extra_len = elen;
    *used = 14 + nlen + elen;
    return KILN_OK;
}

int kiln_epmd_names_begin(kiln_epmd_names_iter *it, const uint8_t *buf, size_t len, uint32_t *epmd_port)
{
    if (len < 4)
        return KILN_EPMD_NEED_MORE;
    it->buf = buf;
    it->len = len;
    it->pos = 4;
    *epmd_port = get32(buf);
    return KILN_OK;
}

int kiln_epmd_names_next(kiln_epmd_names_iter *it, const uint8_t **name, size_t *name_len, uint16_t *port)
{
    if (it->pos >= it->len)
        return KILN_EPMD_END;
    const uint8_t *line = it->buf + it->pos;
    size_t rest = it->len - it->pos;
    const uint8_t *nl = memchr(line, '\n', rest);
    if (!nl)
        return KILN_EPMD_NEED_MORE;
    size_t n = (size_t)(nl - line);
    /* "name " Name " at port " Digits; the last " at port " ends the name,
     * which is how erl_epmd splits it too (names cannot hold "\n"). */
    static const char pre[] = "name ", mid[] = " at port ";
    const size_t npre = sizeof pre - 1, nmid = sizeof mid - 1;
    if (n < npre + 1 + nmid + 1 || memcmp(line, pre, npre) != 0)
        return KILN_EPROTO;
    size_t at = SIZE_MAX;
    for (size_t i = n - nmid; i > npre; i--) {
        if (memcmp(line + i, mid, nmid) == 0) {
            at = i;
            break;
        }
    }
    if (at == SIZE_MAX)
        return KILN_EPROTO;
    size_t d = at + nmid;
    if (d == n || n - d > 5)
        return KILN_EPROTO;
    uint32_t v = 0;
    for (; d < n; d++) {
        if (line[d] < '0' || line[d] > '9')
            return KILN_EPROTO;
        v = v * 10 + (uint32_t)(line[d] - '0');
    }
    if (v > 0xFFFF)
        return KILN_EPROTO;
    *name = line + npre;
    *name_len = at - npre;
    *port = (uint16_t)v;
    it->pos += n + 1;
    return KILN_OK;
}

int kiln_epmd_parse_kill_resp(const uint8_t *buf, size_t len, bool *ok)
{
    if (len < 2)
        return (len == 0 || buf[0] == 'O' || buf[0] == 'N') ? KILN_EPMD_NEED_MORE : KILN_EPROTO;
    if (memcmp(buf, "OK", 2) == 0)
        *ok = true;
    else if (memcmp(buf, "NO", 2) == 0)
        *ok = false;
    else
        return KILN_EPROTO;
    return KILN_OK;
}

int kiln_epmd_parse_stop_resp(const uint8_t *buf, size_t len, bool *stopped)
{
    static const char yes[] = "STOPPED", no[] = "NOEXIST";
    size_t m = len < 7 ? len : 7;
    bool y = memcmp(buf, yes, m) == 0, nx = memcmp(buf, no, m) == 0;
    if (!y && !nx)
        return KILN_EPROTO;
    if (len < 7)
        return KILN_EPMD_NEED_MORE;
    *stopped = y;
    return KILN_OK;
}

/* ---- embedded server ---- */

void kiln_epmd_buf_free(kiln_epmd_buf *b)
{
    kiln_free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* Room for n more bytes at the end of b. */
static uint8_t *buf_room(kiln_epmd_buf *b, size_t n)
{
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n)
            cap *= 2;
        uint8_t *p = kiln_realloc(b->data, cap);
        if (!p)
            return NULL;
        b->data = p;
        b->cap = cap;
    }
    return b->data + b->len;
}

struct reg_entry {
    kiln_epmd_entry e;
    bool live;
    uint64_t seq; /* when it was last unregistered: the oldest is forgotten first */
};

struct kiln_epmd_server {
    kiln_epmd_server_config cfg;
    uint64_t rng;
    uint64_t seq;
    struct reg_entry *v;
    size_t n, cap;
    size_t live, dead;
};

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Creations 0..3 are reserved (0 = "any", 1..3 the old 2-bit ones), so a
 * fresh or bumped 32-bit creation is always >= 4, as in epmd. */
static uint32_t fresh_creation(kiln_epmd_server *s)
{
    uint32_t c = (uint32_t)splitmix64(&s->rng);
    return c < 4 ? c + 4 : c;
}

static uint32_t bump_creation(uint32_t c)
{
    c++;
    return c < 4 ? 4 : c;
}

kiln_epmd_server *kiln_epmd_server_new(const kiln_epmd_server_config *cfg)
{
    kiln_epmd_server *s = kiln_calloc(1, sizeof *s);
    if (!s)
        return NULL;
    if (cfg)
        s->cfg = *cfg;
    else
        s->cfg.port = KILN_EPMD_DEFAULT_PORT;
    if (!s->cfg.max_nodes)
        s->cfg.max_nodes = 4096;
    if (!s->cfg.max_remembered)
        s->cfg.max_remembered = 1000;
    s->rng = s->cfg.seed;
    if (!s->rng) {
        /* Clock-seeded like epmd, so a restarted server hands out creations
         * the peers have not seen for this name. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        s->rng = ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)ts.tv_nsec;
    }
    return s;
}

static void entry_free(struct reg_entry *r)
{
    kiln_free((void *)r->e.node.name);
    kiln_free((void *)r->e.node.extra);
}

void kiln_epmd_server_free(kiln_epmd_server *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        entry_free(&s->v[i]);
    kiln_free(s->v);
    kiln_free(s);
}

static struct reg_entry *find(const kiln_epmd_server *s, const uint8_t *name, size_t len)
{
    for (size_t i = 0; i < s->n; i++) {
        const kiln_epmd_node *nd = &s->v[i].e.node;
        if (nd->name_len == len && memcmp(nd->name, name, len) == 0)
            return &s->v[i];
    }
    return NULL;
}

static void remove_at(kiln_epmd_server *s, size_t i)
{
    entry_free(&s->v[i]);
    s->v[i] = s->v[--s->n];
}

static void unregister(kiln_epmd_server *s, struct reg_entry *r)
{
    r->live = false;
    r->seq = ++s->seq;
    s->live--;
    s->dead++;
    /* Remember a bounded number of names: forget the oldest beyond that. */
    while (s->dead > s->cfg.max_remembered) {
        size_t oldest = SIZE_MAX;
        for (size_t i = 0; i < s->n; i++)
            if (!s->v[i].live && (oldest == SIZE_MAX || s->v[i].seq < s->v[oldest].seq))
                oldest = i;
        remove_at(s, oldest);
        s->dead--;
    }
}

/* Field checks for a registration; epmd itself is laxer about type and
 * protocol, but every OTP and C node sends these values. */
static bool node_valid(const kiln_epmd_node *n)
{
    return n->port != 0 && (n->type == KILN_EPMD_NODE_NORMAL || n->type == KILN_EPMD_NODE_HIDDEN) &&
           n->protocol == KILN_EPMD_PROTO_TCP && n->lowest <= n->highest && n->highest != 0 &&
           n->extra_len <= KILN_EPMD_MAX_EXTRA && (n->extra_len == 0 || n->extra) &&
           kiln_epmd_check_name(n->name, n->name_len) == KILN_OK;
}

int kiln_epmd_server_register(kiln_epmd_server *s, uint64_t conn, const kiln_epmd_node *node,
                              uint32_t *creation)
{
    if (!node || !node_valid(node))
        return KILN_EINVAL;
    struct reg_entry *r = find(s, node->name, node->name_len);
    if (r && r->live)
        return KILN_ENAME_TAKEN;
    if (s->live >= s->cfg.max_nodes)
        return KILN_ESYSTEM_LIMIT;
    uint8_t *extra = NULL;
    if (node->extra_len) {
        if (!(extra = kiln_malloc(node->extra_len)))
            return KILN_ENOMEM;
        memcpy(extra, node->extra, node->extra_len);
    }
    /* Nodes older than OTP 23 (HighestVersion < 6) get the 'y' reply and
     * understand only the 2-bit creations 1..3. */
    bool old = node->highest < 6;
    uint32_t c;
    if (r) {
        c = old ? r->e.creation % 3 + 1 : bump_creation(r->e.creation);
        kiln_free((void *)r->e.node.extra);
        s->dead--;
    } else {
        if (s->n == s->cap) {
            size_t cap = s->cap ? s->cap * 2 : 16;
            struct reg_entry *v = kiln_realloc(s->v, cap * sizeof *v);
            if (!v) {
                kiln_free(extra);
                return KILN_ENOMEM;
            }
            s->v = v;
            s->cap = cap;
        }
        uint8_t *name = kiln_malloc(node->name_len);
        if (!name) {
            kiln_free(extra);
            return KILN_ENOMEM;
        }
        memcpy(name, node->name, node->name_len);
        c = old ? fresh_creation(s) % 3 + 1 : fresh_creation(s);
        r = &s->v[s->n++];
        memset(r, 0, sizeof *r);
        r->e.node.name = name;
        r->e.node.name_len = node->name_len;
    }
    const uint8_t *name = r->e.node.name;
    r->e.node = *node;
    r->e.node.name = name;
    r->e.node.extra = extra;
    r->e.creation = c;
    r->e.conn = conn;
    r->live = true;
    s->live++;
    *creation = c;
    return KILN_OK;
}

void kiln_epmd_server_closed(kiln_epmd_server *s, uint64_t conn)
{
    /* unregister may forget (move) entries, so rescan after each one; a
     * connection normally holds at most one name. */
    for (bool again = true; again;) {
        again = false;
        for (size_t i = 0; i < s->n; i++) {
            if (s->v[i].live && s->v[i].e.conn == conn) {
                unregister(s, &s->v[i]);
                again = true;
                break;
            }
        }
    }
}

const kiln_epmd_entry *kiln_epmd_server_lookup(const kiln_epmd_server *s, const uint8_t *name,
                                               size_t name_len)
{
    struct reg_entry *r = find(s, name, name_len);
    return r && r->live ? &r->e : NULL;
}

size_t kiln_epmd_server_count(const kiln_epmd_server *s) { return s->live; }

/* Append an encoder's output, growing out as needed. */
#define APPEND(out, call_with_buf_cap)                                      \
    do {                                                                    \
        size_t n_ = 0;                                                      \
        uint8_t *p_ = (out)->data ? (out)->data + (out)->len : NULL;        \
        size_t cap_ = (out)->cap - (out)->len;                              \
        int rc_ = call_with_buf_cap;                                        \
        if (rc_ == KILN_ENOSPC) {                                           \
            if (!(p_ = buf_room((out), n_)))                                \
                return KILN_ENOMEM;                                         \
            cap_ = (out)->cap - (out)->len;                                 \
            rc_ = call_with_buf_cap;                                        \
        }                                                                   \
        if (rc_ != KILN_OK)                                                 \
            return rc_;                                                     \
        (out)->len += n_;                                                   \
    } while (0)

static int append_text(kiln_epmd_buf *out, const char *text, size_t n)
{
    uint8_t *p = buf_room(out, n);
    if (!p)
        return KILN_ENOMEM;
    memcpy(p, text, n);
    out->len += n;
    return KILN_OK;
}

static int reply_alive2(kiln_epmd_server *s, uint64_t conn, const kiln_epmd_req *req,
                        kiln_epmd_buf *out, kiln_epmd_reply *reply)
{
    uint32_t creation = 0;
    int rc = kiln_epmd_server_register(s, conn, &req->node, &creation);
    if (rc == KILN_EINVAL || rc == KILN_ENOMEM)
        return rc; /* invalid requests get no answer, just the close */
    bool x = req->node.highest >= 6;
    uint8_t result = rc == KILN_OK ? 0 : 1;
    /* A refused name still gets a well-formed reply (epmd: result 1). */
    APPEND(out, kiln_epmd_enc_alive2_resp(p_, cap_, x, result, result ? 0 : creation, &n_));
    if (rc == KILN_OK)
        reply->action = KILN_EPMD_KEEP;
    return KILN_OK;
}

static int reply_names(kiln_epmd_server *s, kiln_epmd_buf *out, bool dump)
{
    APPEND(out, kiln_epmd_enc_names_header(p_, cap_, s->cfg.port, &n_));
    for (size_t i = 0; i < s->n; i++) {
        const struct reg_entry *r = &s->v[i];
        if (!dump) {
            if (r->live)
                APPEND(out, kiln_epmd_enc_names_line(p_, cap_, r->e.node.name, r->e.node.name_len,
                                                     r->e.node.port, &n_));
            continue;
        }
        /* DUMP is debug text for humans (epmd -dump); same wording as epmd,
         * with the owner's connection id where epmd prints its fd. */
        char head[64], tail[96];
        int hn, tn;
        if (r->live) {
            hn = snprintf(head, sizeof head, "active name     <");
            tn = snprintf(tail, sizeof tail, "> at port %u, fd = %llu\n", (unsigned)r->e.node.port,
                          (unsigned long long)r->e.conn);
        } else {
            hn = snprintf(head, sizeof head, "old/unused name <");
            tn = snprintf(tail, sizeof tail, ">, port = %u, fd = %llu \n", (unsigned)r->e.node.port,
                          (unsigned long long)r->e.conn);
        }
        int rc;
        if ((rc = append_text(out, head, (size_t)hn)) != KILN_OK ||
            (rc = append_text(out, (const char *)r->e.node.name, r->e.node.name_len)) != KILN_OK ||
            (rc = append_text(out, tail, (size_t)tn)) != KILN_OK)
            return rc;
    }
    return KILN_OK;
}

int kiln_epmd_server_handle(kiln_epmd_server *s, uint64_t conn, bool local_peer, const kiln_epmd_req *req,
                            kiln_epmd_buf *out, kiln_epmd_reply *reply)
{
    memset(reply, 0, sizeof *reply);
    reply->action = KILN_EPMD_CLOSE;
    size_t start = out->len;
    int rc;
    switch (req->code) {
    case KILN_EPMD_ALIVE2_REQ:
        /* Registration, DUMP, KILL and STOP only from this host, as epmd. */
        rc = local_peer ? reply_alive2(s, conn, req, out, reply) : KILN_EREFUSED;
        break;
    case KILN_EPMD_PORT_PLEASE2_REQ: {
        const kiln_epmd_entry *e = kiln_epmd_server_lookup(s, req->name, req->name_len);
        APPEND(out, kiln_epmd_enc_port2_resp(p_, cap_, e ? &e->node : NULL, &n_));
        rc = KILN_OK;
        break;
    }
    case KILN_EPMD_NAMES_REQ: rc = reply_names(s, out, false); break;
    case KILN_EPMD_DUMP_REQ: rc = local_peer ? reply_names(s, out, true) : KILN_EREFUSED; break;
    case KILN_EPMD_KILL_REQ:
        if (!local_peer) {
            rc = KILN_EREFUSED;
        } else if (s->live && !s->cfg.relaxed) {
            rc = append_text(out, "NO", 2);
        } else {
            rc = append_text(out, "OK", 2);
            reply->action = KILN_EPMD_SHUTDOWN;
        }
        break;
    case KILN_EPMD_STOP_REQ: {
        if (!local_peer || !s->cfg.relaxed) {
            rc = KILN_EREFUSED;
            break;
        }
        struct reg_entry *r = find(s, req->name, req->name_len);
        if (r && r->live) {
            reply->close_other = true;
            reply->other_conn = r->e.conn;
            unregister(s, r);
            rc = append_text(out, "STOPPED", 7);
        } else {
            rc = append_text(out, "NOEXIST", 7);
        }
        break;
    }
    default: rc = KILN_EBADREQ; break;
    }
    if (rc != KILN_OK) {
        out->len = start;
        reply->action = KILN_EPMD_CLOSE;
    }
    return rc;
}

int kiln_epmd_server_feed(kiln_epmd_server *s, uint64_t conn, bool local_peer, const uint8_t *buf,
                          size_t len, kiln_epmd_buf *out, kiln_epmd_reply *reply, size_t *used)
{
    memset(reply, 0, sizeof *reply);
    reply->action = KILN_EPMD_CLOSE;
    kiln_epmd_req req;
    int rc = kiln_epmd_parse_req(buf, len, &req, used);
    if (rc != KILN_OK)
        return rc;
    return kiln_epmd_server_handle(s, conn, local_peer, &req, out, reply);
}
