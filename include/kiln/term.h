/* Kiln terms: one 64-bit tagged word per Erlang value.
 *
 * Immediates (small integers, atoms, local pids, nil) live in the word.
 * Everything else is "boxed": the word points at a header word inside the
 * arena of the message that owns it. A term is only valid while the
 * message (kiln_msg) holding it is alive; copy it with kiln_term_copy to
 * keep it in another message.
 *
 * Layout (low 3 bits = primary tag):
 *   ...000  boxed pointer (8-byte aligned) -> header word
 *   ...001  cons pointer | 1 -> two words {head, tail}
 *   ...010  small integer, value << 3 (61-bit signed)
 *   ...011  atom, index << 3
 *   ...100  local pid: serial(29 bits) << 35 | id(32 bits) << 3
 *   ...101  special: KILN_NIL, KILN_NONE
 * Header word: (size << 8) | subtag; size counts the payload words (for a
 * tuple, the arity).
 */
#ifndef KILN_TERM_H
#define KILN_TERM_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kiln/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#pragma GCC visibility push(default)

typedef uint64_t kiln_term;

#define KILN_TAG_MASK 0x7u
#define KILN_TAG_BOXED 0x0u
#define KILN_TAG_CONS 0x1u
#define KILN_TAG_SMALL 0x2u
#define KILN_TAG_ATOM 0x3u
#define KILN_TAG_PID 0x4u
#define KILN_TAG_SPECIAL 0x5u

#define KILN_NIL ((kiln_term)0x5u)        /* [] */
#define KILN_NONE ((kiln_term)0xDu)       /* "no term": failed constructor */

#define KILN_SMALL_MAX (((int64_t)1 << 60) - 1)
#define KILN_SMALL_MIN (-((int64_t)1 << 60))

/* Boxed subtags (low 8 bits of the header word). */
enum kiln_subtag {
    KILN_SUB_TUPLE = 1,   /* payload: arity elements */
    KILN_SUB_POS_BIG = 2, /* payload: size 64-bit digits, least significant first */
    KILN_SUB_NEG_BIG = 3,
    KILN_SUB_FLOAT = 4,   /* payload: one double */
    KILN_SUB_BINARY = 5,  /* payload: struct kiln_binary_box tail */
    KILN_SUB_MAP = 6,     /* payload: n keys (sorted, map-key order) then n values */
    KILN_SUB_EXT_PID = 7, /* payload: node atom, id|serial<<32, creation */
    KILN_SUB_PORT = 8,    /* payload: node atom, id, creation */
    KILN_SUB_REF = 9,     /* payload: node atom, creation|len<<32, words[(len+1)/2] */
    KILN_SUB_FUN = 10,    /* payload: struct kiln_fun_box tail (opaque NEW_FUN_EXT bytes) */
    KILN_SUB_EXPORT = 11  /* payload: module atom, function atom, arity */
};

/* Type of a term, as Erlang sees it (in Erlang's term order:
 * number < atom < reference < fun < port < pid < tuple < map < nil < list < bitstring). */
typedef enum kiln_type {
    KILN_T_INVALID = 0,
    KILN_T_INTEGER, /* small or big */
    KILN_T_FLOAT,
    KILN_T_ATOM,
    KILN_T_REF,
    KILN_T_FUN,     /* local fun or export (fun M:F/A) */
    KILN_T_PORT,
    KILN_T_PID,     /* local or remote */
    KILN_T_TUPLE,
    KILN_T_MAP,
    KILN_T_NIL,
    KILN_T_LIST,    /* a cons cell (proper or improper) */
    KILN_T_BITSTRING /* binaries are bitstrings whose bit size is a multiple of 8 */
} kiln_type;

/* ---- immediates (inline, no allocation) ---- */

static inline unsigned kiln_tag(kiln_term t) { return (unsigned)(t & KILN_TAG_MASK); }
static inline bool kiln_is_small(kiln_term t) { return kiln_tag(t) == KILN_TAG_SMALL; }
static inline bool kiln_is_atom(kiln_term t) { return kiln_tag(t) == KILN_TAG_ATOM; }
static inline bool kiln_is_local_pid(kiln_term t) { return kiln_tag(t) == KILN_TAG_PID; }
static inline bool kiln_is_nil(kiln_term t) { return t == KILN_NIL; }
static inline bool kiln_is_none(kiln_term t) { return t == KILN_NONE; }
static inline bool kiln_is_cons(kiln_term t) { return kiln_tag(t) == KILN_TAG_CONS; }
static inline bool kiln_is_boxed(kiln_term t) { return kiln_tag(t) == KILN_TAG_BOXED && t != 0; }

static inline kiln_term kiln_small(int64_t v) { return ((uint64_t)v << 3) | KILN_TAG_SMALL; }
static inline int64_t kiln_small_value(kiln_term t) { return (int64_t)t >> 3; }
static inline bool kiln_fits_small(int64_t v) { return v >= KILN_SMALL_MIN && v <= KILN_SMALL_MAX; }

static inline kiln_term kiln_atom_from_index(uint32_t i) { return ((uint64_t)i << 3) | KILN_TAG_ATOM; }
static inline uint32_t kiln_atom_index(kiln_term t) { return (uint32_t)(t >> 3); }

static inline kiln_term kiln_local_pid(uint32_t id, uint32_t serial)
{
    return ((uint64_t)(serial & 0x1FFFFFFFu) << 35) | ((uint64_t)id << 3) | KILN_TAG_PID;
}
static inline uint32_t kiln_local_pid_id(kiln_term t) { return (uint32_t)(t >> 3); }
static inline uint32_t kiln_local_pid_serial(kiln_term t) { return (uint32_t)(t >> 35); }

static inline const kiln_term *kiln_box_ptr(kiln_term t) { return (const kiln_term *)(uintptr_t)t; }
static inline unsigned kiln_box_subtag(kiln_term t) { return (unsigned)(*kiln_box_ptr(t) & 0xFFu); }
static inline uint64_t kiln_box_size(kiln_term t) { return *kiln_box_ptr(t) >> 8; }
static inline bool kiln_is_box_of(kiln_term t, unsigned sub)
{
    return kiln_is_boxed(t) && kiln_box_subtag(t) == sub;
}
static inline bool kiln_is_tuple(kiln_term t) { return kiln_is_box_of(t, KILN_SUB_TUPLE); }
static inline bool kiln_is_map(kiln_term t) { return kiln_is_box_of(t, KILN_SUB_MAP); }
static inline bool kiln_is_float(kiln_term t) { return kiln_is_box_of(t, KILN_SUB_FLOAT); }
static inline bool kiln_is_bitstring(kiln_term t) { return kiln_is_box_of(t, KILN_SUB_BINARY); }
static inline bool kiln_is_ref(kiln_term t) { return kiln_is_box_of(t, KILN_SUB_REF); }
static inline bool kiln_is_big(kiln_term t)
{
    return kiln_is_boxed(t) && (kiln_box_subtag(t) == KILN_SUB_POS_BIG || kiln_box_subtag(t) == KILN_SUB_NEG_BIG);
}
static inline bool kiln_is_integer(kiln_term t) { return kiln_is_small(t) || kiln_is_big(t); }
static inline bool kiln_is_pid(kiln_term t) { return kiln_is_local_pid(t) || kiln_is_box_of(t, KILN_SUB_EXT_PID); }
static inline bool kiln_is_list(kiln_term t) { return kiln_is_cons(t) || kiln_is_nil(t); }

static inline size_t kiln_tuple_arity(kiln_term t) { return (size_t)kiln_box_size(t); }
/* Element i (0-based); caller checks the arity. */
static inline kiln_term kiln_tuple_get(kiln_term t, size_t i) { return kiln_box_ptr(t)[1 + i]; }
static inline kiln_term kiln_hd(kiln_term c) { return ((const kiln_term *)(uintptr_t)(c - KILN_TAG_CONS))[0]; }
static inline kiln_term kiln_tl(kiln_term c) { return ((const kiln_term *)(uintptr_t)(c - KILN_TAG_CONS))[1]; }

kiln_type kiln_type_of(kiln_term t);

/* ---- atoms: one global table for the process (all runtimes share it) ---- */

/* Intern UTF-8 text (at most 255 characters). */
int kiln_atom(const char *utf8, size_t len, kiln_term *out);
/* Intern a NUL-terminated string; KILN_NONE on any error. For literals. */
kiln_term kiln_atom_c(const char *s);
/* Look up without creating: KILN_ENOTREG if absent (the atom never existed). */
int kiln_atom_existing(const char *utf8, size_t len, kiln_term *out);
/* Text of an atom (UTF-8, not NUL-terminated: use *len); NULL if not an atom. */
const char *kiln_atom_text(kiln_term atom, size_t *len);
/* Current number of atoms, and the limit (set before the first atom is made;
 * default 1048576). Hitting the limit makes kiln_atom return KILN_ESYSTEM_LIMIT. */
size_t kiln_atom_count(void);
int kiln_atom_set_limit(size_t limit);

/* Atoms the runtime always has, fixed at start-up. */
extern kiln_term KILN_ATOM_TRUE, KILN_ATOM_FALSE, KILN_ATOM_OK, KILN_ATOM_ERROR,
    KILN_ATOM_UNDEFINED, KILN_ATOM_NORMAL, KILN_ATOM_KILL, KILN_ATOM_KILLED,
    KILN_ATOM_NOPROC, KILN_ATOM_NOCONNECTION, KILN_ATOM_EXIT, KILN_ATOM_DOWN,
    KILN_ATOM_PROCESS, KILN_ATOM_TIMEOUT, KILN_ATOM_NONODE, KILN_ATOM_GEN_CALL,
    KILN_ATOM_GEN_CAST, KILN_ATOM_ALIAS, KILN_ATOM_BADARG, KILN_ATOM_SHUTDOWN;
/* Makes the table and the atoms above; called by kiln_rt_start, safe to call
 * more than once and from several threads. */
int kiln_atoms_init(void);

/* ---- messages: an arena that owns terms ---- */

typedef struct kiln_msg kiln_msg;

/* A new, empty message whose arena has room for about size_hint bytes of
 * terms (it grows if needed). NULL on allocation failure. */
kiln_msg *kiln_msg_new(size_t size_hint);
void kiln_msg_free(kiln_msg *m);
/* The message's root term (what the receiver sees). */
kiln_term kiln_msg_term(const kiln_msg *m);
void kiln_msg_set_term(kiln_msg *m, kiln_term t);
/* Bytes the arena holds (for process_info memory and tests). */
size_t kiln_msg_size(const kiln_msg *m);
/* Raw arena allocation of n 8-byte words (for codecs); NULL on failure. */
kiln_term *kiln_msg_alloc_words(kiln_msg *m, size_t n);

/* Constructors allocate in m and return the term, or KILN_NONE on failure
 * (allocation, bad argument); passing KILN_NONE in yields KILN_NONE out, so
 * a whole expression can be checked once at the end. */
kiln_term kiln_int(kiln_msg *m, int64_t v);
kiln_term kiln_uint(kiln_msg *m, uint64_t v);
/* Big integer from magnitude digits (little-endian 64-bit words). */
kiln_term kiln_bigint(kiln_msg *m, bool negative, const uint64_t *digits, size_t n);
kiln_term kiln_float(kiln_msg *m, double v);
kiln_term kiln_tuple(kiln_msg *m, size_t arity, ...);              /* kiln_term args */
kiln_term kiln_tuple_v(kiln_msg *m, size_t arity, const kiln_term *elems);
/* Tuple with uninitialised (KILN_NIL) elements, filled with kiln_tuple_set. */
kiln_term kiln_tuple_new(kiln_msg *m, size_t arity);
void kiln_tuple_set(kiln_term tuple, size_t i, kiln_term v);
kiln_term kiln_cons(kiln_msg *m, kiln_term head, kiln_term tail);
kiln_term kiln_list(kiln_msg *m, size_t n, ...);                   /* proper list */
kiln_term kiln_list_v(kiln_msg *m, size_t n, const kiln_term *elems, kiln_term tail);
kiln_term kiln_string(kiln_msg *m, const char *s, size_t len);     /* list of bytes, like "abc" */
kiln_term kiln_binary(kiln_msg *m, const void *data, size_t len);  /* copies; large ones go refcounted */
kiln_term kiln_bitstring(kiln_msg *m, const void *data, size_t nbits);
/* Map from parallel key/value arrays; later duplicates of a key win. */
kiln_term kiln_map(kiln_msg *m, size_t n, const kiln_term *keys, const kiln_term *values);
kiln_term kiln_map_put(kiln_msg *m, kiln_term map, kiln_term key, kiln_term value); /* new map */
kiln_term kiln_ext_pid(kiln_msg *m, kiln_term node, uint32_t id, uint32_t serial, uint32_t creation);
kiln_term kiln_port(kiln_msg *m, kiln_term node, uint64_t id, uint32_t creation);
/* A reference has 1..KILN_REF_MAX_WORDS 32-bit words (least significant first). */
#define KILN_REF_MAX_WORDS 5
kiln_term kiln_ref(kiln_msg *m, kiln_term node, uint32_t creation, const uint32_t *words, size_t nwords);
kiln_term kiln_export(kiln_msg *m, kiln_term module, kiln_term function, unsigned arity);
/* An opaque fun: the NEW_FUN_EXT bytes after the tag (Size field first), kept
 * verbatim so the fun round-trips; module and arity are parsed for printing. */
kiln_term kiln_fun_opaque(kiln_msg *m, const uint8_t *ext_bytes, size_t len);
/* Deep copy of t (from any message) into m. Refcounted binaries are shared. */
kiln_term kiln_term_copy(kiln_msg *m, kiln_term t);

/* ---- refcounted binaries (shared, never copied between local processes) ---- */

/* Binaries of at least this many bytes are stored refcounted off-arena. */
#define KILN_REFC_BIN_MIN 64

typedef struct kiln_bin kiln_bin; /* a refcounted byte blob */
kiln_bin *kiln_bin_alloc(size_t len);      /* refcount 1; NULL on failure */
uint8_t *kiln_bin_data(kiln_bin *b);
size_t kiln_bin_len(const kiln_bin *b);
void kiln_bin_incref(kiln_bin *b);
void kiln_bin_decref(kiln_bin *b);
/* A binary term over b's bytes [off, off+len) (the message takes a reference). */
kiln_term kiln_binary_from_bin(kiln_msg *m, kiln_bin *b, size_t off, size_t len);
/* A sub-binary (bit offset and bit length) of a bitstring, sharing its bytes. */
kiln_term kiln_sub_binary(kiln_msg *m, kiln_term bits, size_t bit_off, size_t nbits);

/* ---- accessors ---- */

/* Integer value if it fits in int64_t (small or big); KILN_EBADARG otherwise. */
int kiln_get_int64(kiln_term t, int64_t *out);
int kiln_get_uint64(kiln_term t, uint64_t *out);
/* Big integer digits: sign and magnitude (little-endian 64-bit words), valid
 * while the owning message lives. Works for smalls too (copy into *scratch). */
int kiln_get_bigint(kiln_term t, bool *negative, const uint64_t **digits, size_t *n, uint64_t *scratch);
int kiln_get_double(kiln_term t, double *out); /* floats only */
/* Bitstring data: bytes, total bits. For a binary, nbits % 8 == 0. */
int kiln_get_bits(kiln_term t, const uint8_t **data, size_t *nbits);
int kiln_get_binary(kiln_term t, const uint8_t **data, size_t *len); /* whole bytes only */
size_t kiln_map_size(kiln_term map);
/* Key and value at position i in the map's key order. */
kiln_term kiln_map_key(kiln_term map, size_t i);
kiln_term kiln_map_value(kiln_term map, size_t i);
/* Value for key, or KILN_NONE. O(log n). */
kiln_term kiln_map_get(kiln_term map, kiln_term key);
/* Length of a proper list; -1 for an improper one. */
int64_t kiln_list_length(kiln_term t);
/* Pids, ports, refs: the node atom (local pids: the caller supplies its node). */
int kiln_get_ext_pid(kiln_term t, kiln_term *node, uint32_t *id, uint32_t *serial, uint32_t *creation);
int kiln_get_port(kiln_term t, kiln_term *node, uint64_t *id, uint32_t *creation);
/* words (if not NULL) needs room for KILN_REF_MAX_WORDS. */
int kiln_get_ref(kiln_term t, kiln_term *node, uint32_t *creation, uint32_t *words, size_t *nwords);
int kiln_get_export(kiln_term t, kiln_term *module, kiln_term *function, unsigned *arity);
/* Opaque fun: its NEW_FUN_EXT bytes (after the tag). */
int kiln_get_fun(kiln_term t, const uint8_t **ext_bytes, size_t *len);

/* ---- comparison, Erlang semantics ---- */

/* Exact equality (=:=): 1 and 1.0 differ. */
bool kiln_term_eq(kiln_term a, kiln_term b);
/* Term order (compare/2 of Erlang): <0, 0, >0. Numbers compare by value
 * across integer and float (1 == 1.0 gives 0 here, as with ==). */
int kiln_term_cmp(kiln_term a, kiln_term b);
/* Order used for map keys: like kiln_term_cmp, but (as in BEAM's map-key
 * order) every integer sorts before every float, at any depth, so 1 and 1.0
 * are distinct keys: #{2 => a, 1.0 => b} has keys [2, 1.0]. */
int kiln_term_cmp_exact(kiln_term a, kiln_term b);
/* A hash consistent with kiln_term_eq. */
uint64_t kiln_term_hash(kiln_term t);

/* ---- printing in Erlang syntax ---- */

/* Writes t as Erlang prints it ({ok,[1,2,3],<<"abc">>}, 'quoted atom',
 * "string", #{a => 1}, <0.12.0>, #Ref<0.1.2.3>) into buf (always
 * NUL-terminated when size > 0); returns the length it needed, like snprintf.
 * Local pids print as <0.ID.SERIAL>. */
size_t kiln_term_print(char *buf, size_t size, kiln_term t);
int kiln_term_fprint(FILE *f, kiln_term t);

/* ---- builder and matcher (format strings, in the spirit of ei's) ----
 *
 * kiln_build(m, "{~a,~i,[~b|~t]}", "ok", 42L, data, len, tail):
 *   ~a  atom from const char *          ~A  atom term (kiln_term)
 *   ~i  int64_t                         ~u  uint64_t
 *   ~f  double                          ~s  string (list) from const char *
 *   ~b  binary from (const void *, size_t)
 *   ~p  pid term (kiln_term)            ~t  any term (kiln_term)
 *   literals: integers (42, -7), atoms (ok, 'Quoted'), [], {}, "strings",
 *   tuples {..}, lists [a,b|T], maps #{k => v}.
 * Returns KILN_NONE on a malformed format or allocation failure.
 *
 * kiln_match(t, "{reply,~t,~i}", &term_out, &int_out):
 *   ~a  const char ** + size_t * (atom text, not copied)   ~A kiln_term *
 *   ~i  int64_t *   ~u uint64_t *   ~f double *   ~b const uint8_t ** + size_t *
 *   ~p  kiln_term * (any pid)   ~t kiln_term * (any term)   _ anything
 *   literals must be equal (=:=).
 * Returns KILN_OK, KILN_ENOMATCH, or KILN_EFORMAT. Outputs are written only
 * on a match. */
kiln_term kiln_build(kiln_msg *m, const char *fmt, ...);
kiln_term kiln_vbuild(kiln_msg *m, const char *fmt, va_list ap);
int kiln_match(kiln_term t, const char *fmt, ...);
int kiln_vmatch(kiln_term t, const char *fmt, va_list ap);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif
