/* libFuzzer target for the kiln_build / kiln_match format strings
 * (runtime/term_format.c) and for kiln_term_print on what they build.
 *
 * The input is a format string. Varargs are the hazard: a directive that
 * reads a vararg of a type it was not passed is undefined behaviour the
 * sanitizers cannot see. So before use every directive is rewritten to one
 * that reads a 64-bit integer (~t ~A ~p ~i ~u for building, ~t for
 * matching, each fed a kiln_term or a kiln_term *), and inputs with more
 * '~' than the NARGS arguments always passed are skipped. That bound holds
 * because each directive is read once: a '~' inside a quoted literal is
 * no directive, and map-key patterns, which the matcher parses once per
 * key of the map, take none.
 *
 * Invariants checked (abort() on a violation):
 *  - kiln_match returns OK, ENOMATCH or EFORMAT; outputs are written only
 *    on OK, and then exactly one per directive, in order; EFORMAT does not
 *    depend on the term.
 *  - A term built from a format without directives matches that format,
 *    unless two map keys in it collapsed into one (later duplicates win).
 *  - kiln_term_print is snprintf-like: the same length whatever the buffer,
 *    the same bytes, always NUL-terminated, never past the given size.
 *  - Printed text that builds again gives an =:= term, except for strings
 *    with characters 160..255 (printed as UTF-8, read back as bytes).
 * Formats are copied to exactly sized heap buffers so that ASan sees any
 * read past the NUL.
 *
 * Seeds: run with FUZZ_TERM_FORMAT_SEEDS=dir to write a seed corpus (the
 * unit tests' and term.h's formats) and exit. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/term.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define MAX_FORMAT 4096
#define NARGS 32

/* Every call passes all NARGS arguments; spelled out because C has no
 * other way to pass a run-time array as varargs. */
#define ARGS4(a, i) a[i], a[i + 1], a[i + 2], a[i + 3]
#define ARGS32(a) ARGS4(a, 0), ARGS4(a, 4), ARGS4(a, 8), ARGS4(a, 12), \
                  ARGS4(a, 16), ARGS4(a, 20), ARGS4(a, 24), ARGS4(a, 28)
#define OUTS4(a, i) &a[i], &a[i + 1], &a[i + 2], &a[i + 3]
#define OUTS32(a) OUTS4(a, 0), OUTS4(a, 4), OUTS4(a, 8), OUTS4(a, 12), \
                  OUTS4(a, 16), OUTS4(a, 20), OUTS4(a, 24), OUTS4(a, 28)
_Static_assert(NARGS == 32, "ARGS32 and OUTS32 pass NARGS arguments");

static kiln_msg *keep;        /* owns the boxed arguments and fixed terms */
static kiln_term args[NARGS]; /* what the build directives read */
static kiln_term fixed[5];    /* matched against every format */

static void check(int cond)
{
    if (!cond)
        abort();
}

static kiln_term must_build(const char *fmt)
{
    kiln_term t = kiln_build(keep, fmt);
    check(t != KILN_NONE);
    return t;
}

/* Argument k: a small integer, an atom, a local pid or a boxed term. ~i
 * reads each as an int64_t, which is defined only for values below 2^63;
 * all of these are (smalls are kept non-negative, boxes are addresses). */
static kiln_term make_arg(int k)
{
    static const char *const atoms[] = {"ok", "error", "Quoted atom", "caf\xC3\xA9", "a~t", ""};
    static const char *const boxed[] = {"{a,1}", "1.5", "\"str\"", "#{k => v}", "[x|y]", "-0.0", "{}", "#{}"};
    switch (k % 4) {
    case 0: return kiln_small(k == 0 ? KILN_SMALL_MAX : k);
    case 1: return kiln_atom_c(atoms[(k / 4) % 6]);
    case 2: return kiln_local_pid((uint32_t)k, (uint32_t)k / 4);
    default: return k == 3 ? kiln_binary(keep, "bin\0\xFF", 5) : must_build(boxed[(k / 4) % 8]);
    }
}

static void setup(void)
{
    check(kiln_atoms_init() == KILN_OK);
    keep = kiln_msg_new(0);
    check(keep != NULL);
    for (int k = 0; k < NARGS; k++) {
        args[k] = make_arg(k);
        check(args[k] != KILN_NONE && args[k] <= (kiln_term)INT64_MAX);
    }
    fixed[0] = KILN_ATOM_OK;
    fixed[1] = must_build("{ok, 42, \"hi\"}");
    fixed[2] = must_build("[1, a, [b|c]]");
    fixed[3] = must_build("#{a => 1, \"k\" => [1,2|x], {t} => 1.5}");
    fixed[4] = KILN_NONE;
}

/* Leaves only the directive letters in keep (the char after each '~');
 * returns how many '~' there are. */
static size_t restrict_directives(char *s, const char *keep_letters)
{
    size_t n = 0;
    for (; *s; s++) {
        if (*s != '~')
            continue;
        n++;
        if (s[1] == '\0')
            break;
        if (!strchr(keep_letters, s[1]))
            s[1] = 't';
        s++;
    }
    return n;
}

static char *dup_exact(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    check(d != NULL);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* Counts, outside quoted literals, the '~' and the "=>" of a format that
 * parsed: there each '~' is a directive and each "=>" one map pair. */
static void scan_format(const char *s, size_t *tildes, size_t *arrows)
{
    char quote = 0;
    *tildes = *arrows = 0;
    for (; *s; s++) {
        if (quote) {
            if (*s == '\\' && s[1])
                s++;
            else if (*s == quote)
                quote = 0;
        } else if (*s == '\'' || *s == '"') {
            quote = *s;
        } else if (*s == '~') {
            (*tildes)++;
        } else if (s[0] == '=' && s[1] == '>') {
            (*arrows)++;
        }
    }
}

/* Pairs over every map in t, nested ones included. */
static size_t map_pairs(kiln_term t)
{
    size_t n = 0;
    for (; kiln_is_cons(t); t = kiln_tl(t))
        n += map_pairs(kiln_hd(t));
    if (kiln_is_tuple(t)) {
        for (size_t i = 0; i < kiln_tuple_arity(t); i++)
            n += map_pairs(kiln_tuple_get(t, i));
    } else if (kiln_is_map(t)) {
        n += kiln_map_size(t);
        for (size_t i = 0; i < kiln_map_size(t); i++)
            n += map_pairs(kiln_map_key(t, i)) + map_pairs(kiln_map_value(t, i));
    }
    return n;
}

/* Whether some list element is a character the printer writes as UTF-8
 * in a string, which the format grammar would read back as two bytes. */
static bool has_latin1_char(kiln_term t)
{
    for (; kiln_is_cons(t); t = kiln_tl(t)) {
        kiln_term h = kiln_hd(t);
        if (kiln_is_small(h) && kiln_small_value(h) >= 160 && kiln_small_value(h) <= 255)
            return true;
        if (has_latin1_char(h))
            return true;
    }
    if (kiln_is_tuple(t)) {
        for (size_t i = 0; i < kiln_tuple_arity(t); i++)
            if (has_latin1_char(kiln_tuple_get(t, i)))
                return true;
    } else if (kiln_is_map(t)) {
        for (size_t i = 0; i < kiln_map_size(t); i++)
            if (has_latin1_char(kiln_map_key(t, i)) || has_latin1_char(kiln_map_value(t, i)))
                return true;
    }
    return false;
}

/* Matches t against fmt (directives all ~t) and checks what was written.
 * KILN_NONE marks an untouched output: ~t never captures it. */
static int match_checked(kiln_term t, const char *fmt, size_t directives)
{
    kiln_term out[NARGS];
    for (size_t i = 0; i < NARGS; i++)
        out[i] = KILN_NONE;
    int rc = kiln_match(t, fmt, OUTS32(out));
    check(rc == KILN_OK || rc == KILN_ENOMATCH || rc == KILN_EFORMAT);
    size_t written = 0;
    while (written < NARGS && out[written] != KILN_NONE)
        written++;
    for (size_t i = written; i < NARGS; i++)
        check(out[i] == KILN_NONE);
    check(rc == KILN_OK ? written == directives : written == 0);
    return rc;
}

/* kiln_term_print with snprintf's contract, into buffers of several sizes
 * (each exactly allocated, so ASan sees an overrun); returns the text. */
static char *print_checked(kiln_term t, size_t short_seed)
{
    enum { SLACK = 16 };
    size_t n = kiln_term_print(NULL, 0, t);
    check(n < SIZE_MAX - SLACK - 1);
    char *big = malloc(n + 1 + SLACK), *exact = malloc(n + 1);
    check(big && exact);
    memset(big, 0x5A, n + 1 + SLACK);
    check(kiln_term_print(big, n + 1 + SLACK, t) == n && big[n] == '\0');
    for (size_t i = n + 1; i < n + 1 + SLACK; i++)
        check(big[i] == 0x5A);
    check(kiln_term_print(exact, n + 1, t) == n && memcmp(exact, big, n + 1) == 0);
    free(big);
    char none = 0x5A;
    check(kiln_term_print(&none, 0, t) == n && none == 0x5A);
    size_t k = 1 + short_seed % (n + 1); /* 1..n+1: a prefix, or all of it */
    char *part = malloc(k);
    check(part != NULL);
    check(kiln_term_print(part, k, t) == n && part[k - 1] == '\0' && memcmp(part, exact, k - 1) == 0);
    free(part);
    return exact;
}

/* The printed text, read back as a format, must give t again. Text with a
 * '~' is not tried: the call passes no arguments. Nor is text with a NUL
 * in it (the format would end there). */
static void check_reparse(kiln_term t, const char *text, size_t len)
{
    if (strlen(text) != len || strchr(text, '~') || has_latin1_char(t))
        return;
    kiln_msg *m = kiln_msg_new(0);
    check(m != NULL);
    kiln_term again = kiln_build(m, text);
    check(again == KILN_NONE || kiln_term_eq(again, t));
    kiln_msg_free(m);
}

static void check_built(kiln_term t, const char *mfmt, size_t size)
{
    size_t tildes, arrows;
    scan_format(mfmt, &tildes, &arrows);
    int rc = match_checked(t, mfmt, tildes);
    /* A '~' inside a literal is no directive, but the rewrite for matching
     * changed the letter after it, so the two formats differ there. */
    if (!strchr(mfmt, '~') && map_pairs(t) == arrows)
        check(rc == KILN_OK);
    char *text = print_checked(t, size);
    check_reparse(t, text, kiln_term_print(NULL, 0, t));
    free(text);
}

/* Matches the fixed terms; a malformed format is malformed for all. */
static void match_fixed(const char *mfmt)
{
    size_t tildes, arrows;
    scan_format(mfmt, &tildes, &arrows);
    int first = match_checked(fixed[0], mfmt, tildes);
    for (size_t i = 1; i < sizeof fixed / sizeof fixed[0]; i++)
        check((match_checked(fixed[i], mfmt, tildes) == KILN_EFORMAT) == (first == KILN_EFORMAT));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MAX_FORMAT)
        return 0;
    /* Cut at a NUL so the buffer ends where the string does. */
    const uint8_t *nul = memchr(data, 0, size);
    size_t len = nul ? (size_t)(nul - data) : size;
    char *fmt = dup_exact((const char *)data, len);
    if (restrict_directives(fmt, "tApiu") > NARGS) {
        free(fmt);
        return 0;
    }
    char *mfmt = dup_exact(fmt, len);
    restrict_directives(mfmt, "t");
    kiln_msg *m = kiln_msg_new(0);
    check(m != NULL);
    kiln_term t = kiln_build(m, fmt, ARGS32(args));
    if (t != KILN_NONE)
        check_built(t, mfmt, size);
    match_fixed(mfmt);
    kiln_msg_free(m);
    free(mfmt);
    free(fmt);
    return 0;
}

/* ---- seed corpus ---- */

static const char *const seeds[] = {
    "{~A,~i,[~u|~t]}",
    "{reply,~t,~i}",
    "[~u, ~t, ~A, ~p, ~i]",
    "~t",
    "#{a => 1, \"k\" => [1,2|~t]}",
    "#{~t => ~i, ok => ~p}",
    "'Quoted atom'",
    "'it\\'s'",
    "a_B@1",
    "''",
    "'\\e\\d\\s\\b\\f\\v\\r\\n\\t\\101\\0'",
    "\"string\"",
    "\"str\\n\\\"q\\\"\"",
    "\"\\303\\251\"",
    "[]",
    "{}",
    "#{}",
    "\"\"",
    "-7",
    "9223372036854775807",
    "-9223372036854775808",
    "1.5e3",
    "-0.0",
    "0.1",
    "1.0e-300",
    " { ok , 42, -7, 'Quoted', [], {}, \"str\\n\", [a,b|c], #{k => v, 1 => 2}, 1.5, '' } ",
    "{1, 1.0, 'Hello World', \"ab\", [], [x, y | z], -3, {}}",
    "{{{{a}}},[[[]]],{[{}]}}",
    "[1 | 2]",
    "#{a => 1, a => 2}",
    "#{a => 1, \"k\" => {x}, 2 => two, 2.0 => float}",
    "#{#{a => 1} => {x, \"y\"}, [1|2] => 2.5, 0.0 => z, -0.0 => w}",
    "#{\"ab\" => 1, [97, 98] => 2}",
    "{_, _Tag, ~t}",
    "{x, ~t",
    "~",
};

static void write_seeds(const char *dir)
{
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/seed-%02zu", dir, i);
        FILE *f = fopen(path, "wb");
        if (!f)
            continue;
        fwrite(seeds[i], 1, strlen(seeds[i]), f);
        fclose(f);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *dir = getenv("FUZZ_TERM_FORMAT_SEEDS");
    if (dir && *dir) {
        write_seeds(dir);
        exit(0);
    }
    setup();
    return 0;
}
