/* The global atom table: interning, text, UTF-8 rules, length and count
 * limits, and concurrent interning. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "testutil.h"

static void test_intern_same_index(void **state)
{
    (void)state;
    kiln_term a, b, c;
    assert_int_equal(kiln_atom("hello", 5, &a), KILN_OK);
    assert_int_equal(kiln_atom("hello", 5, &b), KILN_OK);
    assert_int_equal(kiln_atom("hellp", 5, &c), KILN_OK);
    assert_true(kiln_is_atom(a));
    assert_true(a == b);
    assert_true(a != c);
    assert_true(kiln_atom_c("hello") == a);
    size_t len = 0;
    const char *t = kiln_atom_text(a, &len);
    assert_non_null(t);
    assert_int_equal(len, 5);
    assert_memory_equal(t, "hello", 5);
    /* Prefixes and embedded NULs are different atoms. */
    kiln_term h, nul;
    assert_int_equal(kiln_atom("hell", 4, &h), KILN_OK);
    assert_true(h != a);
    assert_int_equal(kiln_atom("a\0b", 3, &nul), KILN_OK);
    assert_true(nul != kiln_atom_c("a"));
    t = kiln_atom_text(nul, &len);
    assert_int_equal(len, 3);
    assert_memory_equal(t, "a\0b", 3);
}

static void test_builtins(void **state)
{
    (void)state;
    assert_int_equal(kiln_atoms_init(), KILN_OK);
    assert_int_equal(kiln_atoms_init(), KILN_OK);
    size_t len;
    assert_string_equal(kiln_atom_text(KILN_ATOM_OK, &len), "ok");
    assert_string_equal(kiln_atom_text(KILN_ATOM_EXIT, &len), "EXIT");
    assert_string_equal(kiln_atom_text(KILN_ATOM_DOWN, &len), "DOWN");
    assert_string_equal(kiln_atom_text(KILN_ATOM_NONODE, &len), "nonode@nohost");
    assert_string_equal(kiln_atom_text(KILN_ATOM_GEN_CALL, &len), "$gen_call");
    assert_string_equal(kiln_atom_text(KILN_ATOM_SHUTDOWN, &len), "shutdown");
    assert_true(kiln_atom_c("true") == KILN_ATOM_TRUE);
    assert_true(kiln_atom_c("badarg") == KILN_ATOM_BADARG);
    assert_true(KILN_ATOM_TRUE != KILN_ATOM_FALSE);
}

static void test_text_of_non_atoms(void **state)
{
    (void)state;
    size_t len = 99;
    assert_null(kiln_atom_text(kiln_small(3), &len));
    assert_null(kiln_atom_text(KILN_NIL, &len));
    /* An index never handed out has no text. */
    assert_null(kiln_atom_text(kiln_atom_from_index(200000000), &len));
    assert_int_equal(len, 99);
}

static void test_existing(void **state)
{
    (void)state;
    kiln_term t = KILN_NIL;
    assert_int_equal(kiln_atom_existing("never_made_zq", 13, &t), KILN_ENOTREG);
    assert_true(t == KILN_NIL);
    size_t before = kiln_atom_count();
    assert_int_equal(kiln_atom_existing("never_made_zq", 13, &t), KILN_ENOTREG);
    assert_int_equal(kiln_atom_count(), before);
    kiln_term made;
    assert_int_equal(kiln_atom("never_made_zq", 13, &made), KILN_OK);
    assert_int_equal(kiln_atom_count(), before + 1);
    assert_int_equal(kiln_atom_existing("never_made_zq", 13, &t), KILN_OK);
    assert_true(t == made);
    assert_int_equal(kiln_atom_existing("\xC0\x80", 2, &t), KILN_EBADUTF8);
}

static void test_empty_and_args(void **state)
{
    (void)state;
    kiln_term e, e2;
    assert_int_equal(kiln_atom("", 0, &e), KILN_OK);
    assert_int_equal(kiln_atom(NULL, 0, &e2), KILN_OK);
    assert_true(e == e2);
    size_t len = 7;
    assert_non_null(kiln_atom_text(e, &len));
    assert_int_equal(len, 0);
    assert_int_equal(kiln_atom(NULL, 3, &e), KILN_EINVAL);
    assert_int_equal(kiln_atom("x", 1, NULL), KILN_EINVAL);
    assert_true(kiln_atom_c(NULL) == KILN_NONE);
}

static void test_utf8(void **state)
{
    (void)state;
    static const char *good[] = {"h\xC3\xA9llo", "\xE6\x97\xA5\xE6\x9C\xAC", "\xF0\x9F\x98\x80",
                                 "\xF4\x8F\xBF\xBF", "\xEF\xBF\xBF", "\xC2\x80"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        kiln_term t;
        assert_int_equal(kiln_atom(good[i], strlen(good[i]), &t), KILN_OK);
        size_t len;
        const char *s = kiln_atom_text(t, &len);
        assert_int_equal(len, strlen(good[i]));
        assert_memory_equal(s, good[i], len);
    }
    static const char *bad[] = {
        "\xC0\x80",         /* overlong NUL */
        "\xC1\xBF",         /* overlong */
        "\xE0\x80\x80",     /* overlong 3-byte */
        "\xE0\x9F\xBF",     /* overlong 3-byte, top */
        "\xF0\x8F\xBF\xBF", /* overlong 4-byte */
        "\xED\xA0\x80",     /* surrogate U+D800 */
        "\xED\xBF\xBF",     /* surrogate U+DFFF */
        "\xF4\x90\x80\x80", /* U+110000 */
        "\xF5\x80\x80\x80",
        "\x80",             /* lone continuation */
        "a\xE2\x82",        /* truncated */
        "\xFF",
        "\xC3(",            /* bad continuation */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kiln_term t = KILN_NIL;
        assert_int_equal(kiln_atom(bad[i], strlen(bad[i]), &t), KILN_EBADUTF8);
        assert_true(t == KILN_NIL);
    }
    assert_true(kiln_atom_c("\xC0\x80") == KILN_NONE);
}

static void test_length_limit(void **state)
{
    (void)state;
    char buf[2048];
    kiln_term t;
    memset(buf, 'x', 256);
    assert_int_equal(kiln_atom(buf, 255, &t), KILN_OK);
    assert_int_equal(kiln_atom(buf, 256, &t), KILN_EATOM_TOO_LONG);
    /* The limit counts characters, not bytes. */
    for (size_t i = 0; i < 256; i++)
        memcpy(buf + 2 * i, "\xC3\xA9", 2);
    assert_int_equal(kiln_atom(buf, 510, &t), KILN_OK);
    assert_int_equal(kiln_atom(buf, 512, &t), KILN_EATOM_TOO_LONG);
    for (size_t i = 0; i < 256; i++)
        memcpy(buf + 4 * i, "\xF0\x9F\x98\x80", 4);
    assert_int_equal(kiln_atom(buf, 1020, &t), KILN_OK);
    size_t len;
    kiln_atom_text(t, &len);
    assert_int_equal(len, 1020);
    assert_int_equal(kiln_atom(buf, 1024, &t), KILN_EATOM_TOO_LONG);
    assert_int_equal(kiln_atom(buf, 1021, &t), KILN_EATOM_TOO_LONG);
}

static void test_count_limit(void **state)
{
    (void)state;
    size_t n = kiln_atom_count();
    assert_int_equal(kiln_atom_set_limit(n - 1), KILN_EINVAL);
    assert_int_equal(kiln_atom_set_limit((size_t)1 << 40), KILN_EINVAL);
    assert_int_equal(kiln_atom_set_limit(n + 3), KILN_OK);
    kiln_term a[4];
    assert_int_equal(kiln_atom("lim_1", 5, &a[0]), KILN_OK);
    assert_int_equal(kiln_atom("lim_2", 5, &a[1]), KILN_OK);
    assert_int_equal(kiln_atom("lim_3", 5, &a[2]), KILN_OK);
    assert_int_equal(kiln_atom("lim_4", 5, &a[3]), KILN_ESYSTEM_LIMIT);
    assert_true(kiln_atom_c("lim_5") == KILN_NONE);
    assert_int_equal(kiln_atom_count(), n + 3);
    /* Existing atoms are still found at the limit. */
    kiln_term again;
    assert_int_equal(kiln_atom("lim_2", 5, &again), KILN_OK);
    assert_true(again == a[1]);
    assert_int_equal(kiln_atom_existing("lim_4", 5, &again), KILN_ENOTREG);
    assert_int_equal(kiln_atom_set_limit(1048576), KILN_OK);
    assert_int_equal(kiln_atom("lim_4", 5, &a[3]), KILN_OK);
}

#define NTHREADS 4
#define NNAMES 30000

struct worker {
    int id;
    kiln_term *out;
    int errors;
};

static void name_of(int i, char *buf, size_t size) { snprintf(buf, size, "conc_%d_name", i); }

static void *intern_worker(void *arg)
{
    struct worker *w = arg;
    char name[64];
    /* Each thread walks the same names from a different start, so the
     * same names are being created by several threads at once. */
    for (int k = 0; k < NNAMES; k++) {
        int i = (k + w->id * (NNAMES / NTHREADS)) % NNAMES;
        name_of(i, name, sizeof name);
        if (kiln_atom(name, strlen(name), &w->out[i]) != KILN_OK) {
            w->errors++;
            continue;
        }
        size_t len;
        const char *t = kiln_atom_text(w->out[i], &len);
        if (!t || len != strlen(name) || memcmp(t, name, len) != 0)
            w->errors++;
        /* Read an atom another thread may have just made. */
        if (k > 0) {
            int j = (i + NNAMES - 1) % NNAMES;
            if (w->out[j] != 0 && !kiln_atom_text(w->out[j], &len))
                w->errors++;
        }
    }
    return NULL;
}

static void test_concurrent_interning(void **state)
{
    (void)state;
    size_t before = kiln_atom_count();
    static kiln_term out[NTHREADS][NNAMES];
    pthread_t th[NTHREADS];
    struct worker w[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        w[i] = (struct worker){i, out[i], 0};
        assert_int_equal(pthread_create(&th[i], NULL, intern_worker, &w[i]), 0);
    }
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].errors, 0);
    }
    for (int n = 0; n < NNAMES; n++) {
        for (int i = 1; i < NTHREADS; i++)
            assert_true(out[i][n] == out[0][n]);
    }
    for (int n = 1; n < NNAMES; n++)
        assert_true(out[0][n] != out[0][n - 1]);
    assert_int_equal(kiln_atom_count(), before + NNAMES);
    char name[64];
    name_of(12345, name, sizeof name);
    kiln_term t;
    assert_int_equal(kiln_atom_existing(name, strlen(name), &t), KILN_OK);
    assert_true(t == out[2][12345]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_intern_same_index),
        cmocka_unit_test(test_builtins),
        cmocka_unit_test(test_text_of_non_atoms),
        cmocka_unit_test(test_existing),
        cmocka_unit_test(test_empty_and_args),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_length_limit),
        cmocka_unit_test(test_count_limit),
        cmocka_unit_test(test_concurrent_interning),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
