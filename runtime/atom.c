/* The global atom table.
 *
 * Entries live in fixed-size chunks that are never moved or freed, so
 * index -> text is two acquire loads and no lock. Name -> index goes
 * through a ck_hs set in SPMC mode: any number of lock-free readers, one
 * writer at a time (write_lock). Atoms are never removed. */
#include <ck_hs.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "kiln/term.h"
#include "alloc.h"
#include "tls.h"

#ifdef KILN_TSAN
#include <sanitizer/tsan_interface.h>
/* ck publishes through inline-asm atomics TSan cannot see; these tell it
 * about the happens-before edge from the writer filling an entry to a
 * reader that found the entry through the set. */
#define TSAN_RELEASE(p) __tsan_release((void *)(p))
#define TSAN_ACQUIRE(p) __tsan_acquire((void *)(p))
#else
#define TSAN_RELEASE(p) ((void)(p))
#define TSAN_ACQUIRE(p) ((void)(p))
#endif

#define CHUNK_BITS 12
#define CHUNK_SIZE ((size_t)1 << CHUNK_BITS)
#define ATOMS_MAX ((size_t)1 << 28)
#define CHUNKS_MAX (ATOMS_MAX / CHUNK_SIZE)
#define DEFAULT_LIMIT ((size_t)1048576)
#define MAX_CHARS 255
#define MAX_BYTES (4 * MAX_CHARS)
#define BUILTIN_ATOMS 20 /* the KILN_ATOM_* set made by kiln_atoms_init */

/* Probe keys passed to ck_hs_get have the same layout (text, len), so the
 * hash and compare callbacks take either. */
struct atom_entry {
    _Atomic(const char *) text; /* NULL until the entry is complete */
    size_t len;
    uint32_t index;
};

static _Atomic(struct atom_entry *) chunks[CHUNKS_MAX];
static _Atomic size_t atom_count;
static _Atomic size_t atom_limit = DEFAULT_LIMIT;
static atomic_bool table_ready;
static pthread_mutex_t write_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_result = KILN_ENOMEM;
static ck_hs_t atom_set;

/* The built-in atoms are the first ones made, in this order, so their
 * values are known before the table exists: a term built before anything
 * calls kiln_atoms_init still holds the right atom. */
#define BUILTIN(i) (((kiln_term)(i) << 3) | KILN_TAG_ATOM)
kiln_term KILN_ATOM_TRUE = BUILTIN(0),
          KILN_ATOM_FALSE = BUILTIN(1),
          KILN_ATOM_OK = BUILTIN(2),
          KILN_ATOM_ERROR = BUILTIN(3),
          KILN_ATOM_UNDEFINED = BUILTIN(4),
          KILN_ATOM_NORMAL = BUILTIN(5),
          KILN_ATOM_KILL = BUILTIN(6),
          KILN_ATOM_KILLED = BUILTIN(7),
          KILN_ATOM_NOPROC = BUILTIN(8),
          KILN_ATOM_NOCONNECTION = BUILTIN(9),
          KILN_ATOM_EXIT = BUILTIN(10),
          KILN_ATOM_DOWN = BUILTIN(11),
          KILN_ATOM_PROCESS = BUILTIN(12),
          KILN_ATOM_TIMEOUT = BUILTIN(13),
          KILN_ATOM_NONODE = BUILTIN(14),
          KILN_ATOM_GEN_CALL = BUILTIN(15),
          KILN_ATOM_GEN_CAST = BUILTIN(16),
          KILN_ATOM_ALIAS = BUILTIN(17),
          KILN_ATOM_BADARG = BUILTIN(18),
          KILN_ATOM_SHUTDOWN = BUILTIN(19);

/* ---- ck_hs callbacks ---- */

static unsigned long atom_hash(const void *key, unsigned long seed)
{
    const struct atom_entry *e = key;
    const unsigned char *s = (const unsigned char *)atomic_load_explicit(&e->text, memory_order_relaxed);
    uint64_t h = UINT64_C(0xcbf29ce484222325) ^ seed;
    for (size_t i = 0; i < e->len; i++) {
        h ^= s[i];
        h *= UINT64_C(0x100000001b3);
    }
    h ^= h >> 33;
    h *= UINT64_C(0xff51afd7ed558ccd);
    h ^= h >> 33;
    return (unsigned long)h;
}

static bool atom_equal(const void *stored, const void *probe)
{
    const struct atom_entry *a = stored, *b = probe;
    /* A reader reaches the stored entry through ck's own loads. */
    TSAN_ACQUIRE(a);
    return a->len == b->len &&
           memcmp(atomic_load_explicit(&a->text, memory_order_relaxed),
                  atomic_load_explicit(&b->text, memory_order_relaxed), a->len) == 0;
}

/* Tables ck_hs retires when it grows may still be probed by readers that
 * loaded the old map pointer, and nothing here tells us when they are done
 * (there is no epoch or quiescent-state scheme for arbitrary threads calling
 * kiln_atom). So retired tables are kept on a list and never freed before
 * exit. Capacities double, so the retired total stays below the live
 * table's size: at most one extra table's worth of memory. */
struct retired {
    struct retired *next;
    void *table;
};
static struct retired *retired_tables;

static void *hs_malloc(size_t n) { return kiln_malloc(n); }

static void hs_free(void *p, size_t n, bool defer)
{
    (void)n;
    if (!p)
        return;
    if (!defer) {
        kiln_free(p);
        return;
    }
    struct retired *r = kiln_malloc(sizeof *r);
    if (!r)
        return; /* leaking is the only safe choice left */
    r->table = p;
    r->next = retired_tables; /* under write_lock: grow happens inside put */
    retired_tables = r;
}

static struct ck_malloc hs_allocator = {.malloc = hs_malloc, .realloc = NULL, .free = hs_free};

/* ---- UTF-8 ---- */

/* Checks utf8 and counts its characters. Rejects overlong forms,
 * surrogates and code points past U+10FFFF. */
static int utf8_chars(const unsigned char *s, size_t len, size_t *chars)
{
    size_t n = 0;
    for (size_t i = 0; i < len; n++) {
        unsigned c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
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
            return KILN_EBADUTF8;
        }
        if (len - i - 1 < k)
            return KILN_EBADUTF8;
        for (size_t j = 1; j <= k; j++) {
            unsigned cc = s[i + j];
            if ((cc & 0xC0) != 0x80)
                return KILN_EBADUTF8;
            cp = (cp << 6) | (cc & 0x3F);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return KILN_EBADUTF8;
        i += k + 1;
    }
    *chars = n;
    return KILN_OK;
}

static int check_text(const char *utf8, size_t len)
{
    if (!utf8 && len > 0)
        return KILN_EINVAL;
    /* Past 4 bytes per character it is too long whatever the bytes are. */
    if (len > MAX_BYTES)
        return KILN_EATOM_TOO_LONG;
    size_t chars;
    int rc = utf8_chars((const unsigned char *)utf8, len, &chars);
    if (rc != KILN_OK)
        return rc;
    return chars > MAX_CHARS ? KILN_EATOM_TOO_LONG : KILN_OK;
}

/* ---- table ---- */

static struct atom_entry *lookup(const char *utf8, size_t len)
{
    struct atom_entry probe;
    atomic_init(&probe.text, utf8 ? utf8 : "");
    probe.len = len;
    probe.index = 0;
    unsigned long h = CK_HS_HASH(&atom_set, atom_hash, &probe);
    struct atom_entry *e = ck_hs_get(&atom_set, h, &probe);
    if (e)
        TSAN_ACQUIRE(e);
    return e;
}

/* Caller holds write_lock and has checked the text. */
static int insert_locked(const char *utf8, size_t len, uint32_t *index)
{
    struct atom_entry *e = lookup(utf8, len);
    if (e) {
        *index = e->index;
        return KILN_OK;
    }
    size_t n = atomic_load_explicit(&atom_count, memory_order_relaxed);
    if (n >= atomic_load_explicit(&atom_limit, memory_order_relaxed) || n >= ATOMS_MAX)
        return KILN_ESYSTEM_LIMIT;
    size_t ci = n >> CHUNK_BITS;
    struct atom_entry *chunk = atomic_load_explicit(&chunks[ci], memory_order_relaxed);
    if (!chunk) {
        chunk = kiln_calloc(CHUNK_SIZE, sizeof *chunk);
        if (!chunk)
            return KILN_ENOMEM;
        atomic_store_explicit(&chunks[ci], chunk, memory_order_release);
    }
    char *text = kiln_malloc(len + 1);
    if (!text)
        return KILN_ENOMEM;
    if (len)
        memcpy(text, utf8, len);
    text[len] = '\0';
    e = &chunk[n & (CHUNK_SIZE - 1)];
    e->len = len;
    e->index = (uint32_t)n;
    atomic_store_explicit(&e->text, text, memory_order_release);
    TSAN_RELEASE(e);
    struct atom_entry probe;
    atomic_init(&probe.text, text);
    probe.len = len;
    probe.index = 0;
    if (!ck_hs_put(&atom_set, CK_HS_HASH(&atom_set, atom_hash, &probe), e)) {
        /* Nobody can have found the entry: it never reached the set. */
        atomic_store_explicit(&e->text, NULL, memory_order_relaxed);
        kiln_free(text);
        return KILN_ENOMEM;
    }
    atomic_store_explicit(&atom_count, n + 1, memory_order_release);
    *index = (uint32_t)n;
    return KILN_OK;
}

static bool make_builtin(const char *s, kiln_term expect)
{
    uint32_t i;
    return insert_locked(s, strlen(s), &i) == KILN_OK && kiln_atom_from_index(i) == expect;
}

static void init_table(void)
{
    pthread_mutex_lock(&write_lock);
    if (!ck_hs_init(&atom_set, CK_HS_MODE_OBJECT | CK_HS_MODE_SPMC, atom_hash, atom_equal,
                    &hs_allocator, 4096, (unsigned long)UINT64_C(0x9e3779b97f4a7c15))) {
        init_result = KILN_ENOMEM;
        pthread_mutex_unlock(&write_lock);
        return;
    }
    static const struct {
        const kiln_term *var;
        const char *name;
    } builtins[] = {
        {&KILN_ATOM_TRUE, "true"}, {&KILN_ATOM_FALSE, "false"}, {&KILN_ATOM_OK, "ok"},
        {&KILN_ATOM_ERROR, "error"}, {&KILN_ATOM_UNDEFINED, "undefined"},
        {&KILN_ATOM_NORMAL, "normal"}, {&KILN_ATOM_KILL, "kill"}, {&KILN_ATOM_KILLED, "killed"},
        {&KILN_ATOM_NOPROC, "noproc"}, {&KILN_ATOM_NOCONNECTION, "noconnection"},
        {&KILN_ATOM_EXIT, "EXIT"}, {&KILN_ATOM_DOWN, "DOWN"}, {&KILN_ATOM_PROCESS, "process"},
        {&KILN_ATOM_TIMEOUT, "timeout"}, {&KILN_ATOM_NONODE, "nonode@nohost"},
        {&KILN_ATOM_GEN_CALL, "$gen_call"}, {&KILN_ATOM_GEN_CAST, "$gen_cast"},
        {&KILN_ATOM_ALIAS, "alias"}, {&KILN_ATOM_BADARG, "badarg"}, {&KILN_ATOM_SHUTDOWN, "shutdown"},
    };
    _Static_assert(sizeof builtins / sizeof builtins[0] == BUILTIN_ATOMS, "BUILTIN_ATOMS");
    int rc = KILN_OK;
    for (size_t i = 0; i < sizeof builtins / sizeof builtins[0]; i++) {
        if (!make_builtin(builtins[i].name, *builtins[i].var))
            rc = KILN_ENOMEM;
    }
    init_result = rc;
    pthread_mutex_unlock(&write_lock);
    if (rc == KILN_OK)
        atomic_store_explicit(&table_ready, true, memory_order_release);
}

int kiln_atoms_init(void)
{
    if (atomic_load_explicit(&table_ready, memory_order_acquire))
        return KILN_OK;
    pthread_once(&init_once, init_table);
    return init_result;
}

/* A per-thread direct-mapped memo of recent look-ups. Decoding and
 * kiln_atom_c meet the same few atoms over and over; a hit costs one
 * memcmp against the table's own (permanent, already checked) text instead
 * of a UTF-8 check and a hash-set probe. */
#define MEMO_SLOTS 256
struct atom_memo {
    const char *text;
    size_t len;
    kiln_term atom;
};
static struct kiln_tls_table memo_table = KILN_TLS_TABLE(MEMO_SLOTS * sizeof(struct atom_memo), NULL);
static KILN_TLS void *tl_memo; /* MEMO_SLOTS entries, from the thread's first atom look-up */

static size_t memo_slot(const char *utf8, size_t len)
{
    uint64_t h = len;
    if (len >= 8) {
        /* Fixed-size copies are plain loads; a variable-size one into a
         * word stalls store forwarding. */
        uint64_t head, tail;
        memcpy(&head, utf8, 8);
        memcpy(&tail, utf8 + len - 8, 8);
        h ^= head ^ (tail * UINT64_C(0xff51afd7ed558ccd));
    } else {
        for (size_t i = 0; i < len; i++)
            h = (h << 8) | (unsigned char)utf8[i];
    }
    return (size_t)((h * UINT64_C(0x9e3779b97f4a7c15)) >> 56);
}

static bool memo_get(const char *utf8, size_t len, kiln_term *out)
{
    if (!utf8 || len > MAX_BYTES)
        return false;
    const struct atom_memo *memo = tl_memo;
    if (!memo)
        return false;
    const struct atom_memo *e = &memo[memo_slot(utf8, len)];
    if (!e->text || e->len != len || memcmp(e->text, utf8, len) != 0)
        return false;
    *out = e->atom;
    return true;
}

static void memo_put(const struct atom_entry *e)
{
    struct atom_memo *memo = tl_memo;
    if (!memo && !(memo = kiln_tls_table_new(&memo_table, &tl_memo)))
        return;
    const char *text = atomic_load_explicit(&e->text, memory_order_acquire);
    struct atom_memo *m = &memo[memo_slot(text, e->len)];
    m->text = text;
    m->len = e->len;
    m->atom = kiln_atom_from_index(e->index);
}

int kiln_atom(const char *utf8, size_t len, kiln_term *out)
{
    if (!out)
        return KILN_EINVAL;
    if (memo_get(utf8, len, out))
        return KILN_OK;
    int rc = check_text(utf8, len);
    if (rc != KILN_OK)
        return rc;
    if ((rc = kiln_atoms_init()) != KILN_OK)
        return rc;
    struct atom_entry *e = lookup(utf8, len);
    if (e) {
        memo_put(e);
        *out = kiln_atom_from_index(e->index);
        return KILN_OK;
    }
    uint32_t index;
    pthread_mutex_lock(&write_lock);
    rc = insert_locked(utf8, len, &index);
    pthread_mutex_unlock(&write_lock);
    if (rc == KILN_OK)
        *out = kiln_atom_from_index(index);
    return rc;
}

kiln_term kiln_atom_c(const char *s)
{
    kiln_term t;
    if (!s || kiln_atom(s, strlen(s), &t) != KILN_OK)
        return KILN_NONE;
    return t;
}

int kiln_atom_existing(const char *utf8, size_t len, kiln_term *out)
{
    if (!out)
        return KILN_EINVAL;
    if (memo_get(utf8, len, out))
        return KILN_OK;
    int rc = check_text(utf8, len);
    if (rc != KILN_OK)
        return rc;
    if ((rc = kiln_atoms_init()) != KILN_OK)
        return rc;
    struct atom_entry *e = lookup(utf8, len);
    if (!e)
        return KILN_ENOTREG;
    memo_put(e);
    *out = kiln_atom_from_index(e->index);
    return KILN_OK;
}

const char *kiln_atom_text(kiln_term atom, size_t *len)
{
    if (!kiln_is_atom(atom))
        return NULL;
    uint32_t i = kiln_atom_index(atom);
    if (i >= ATOMS_MAX)
        return NULL;
    struct atom_entry *chunk = atomic_load_explicit(&chunks[i >> CHUNK_BITS], memory_order_acquire);
    if (!chunk) {
        /* A built-in atom used before anything made the table. */
        if (i >= BUILTIN_ATOMS || kiln_atoms_init() != KILN_OK)
            return NULL;
        chunk = atomic_load_explicit(&chunks[0], memory_order_acquire);
    }
    struct atom_entry *e = &chunk[i & (CHUNK_SIZE - 1)];
    const char *text = atomic_load_explicit(&e->text, memory_order_acquire);
    if (!text)
        return NULL;
    if (len)
        *len = e->len;
    return text;
}

size_t kiln_atom_count(void) { return atomic_load_explicit(&atom_count, memory_order_acquire); }

int kiln_atom_set_limit(size_t limit)
{
    if (limit > ATOMS_MAX || limit < BUILTIN_ATOMS)
        return KILN_EINVAL;
    pthread_mutex_lock(&write_lock);
    int rc = KILN_OK;
    if (limit < atomic_load_explicit(&atom_count, memory_order_relaxed))
        rc = KILN_EINVAL;
    else
        atomic_store_explicit(&atom_limit, limit, memory_order_relaxed);
    pthread_mutex_unlock(&write_lock);
    return rc;
}
