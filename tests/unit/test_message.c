/* Message blocks: the per-thread spares that let a thread reuse the blocks
 * of the messages it frees (runtime/message.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kiln/kiln.h"

#ifdef KILN_TEST_JEMALLOC
#include <jemalloc/jemalloc.h>

static uint64_t thread_allocated(void)
{
    uint64_t v = 0;
    size_t sz = sizeof v;
    assert_int_equal(mallctl("thread.allocated", &v, &sz, NULL, 0), 0);
    return v;
}
#endif

/* Sizes seen once (as while a server starts) must not keep another size
 * from being reused: five sizes freed, then the last of them used over and
 * over, is served from freed blocks, not from the allocator. */
static void test_blocks_follow_the_sizes_in_use(void **state)
{
    (void)state;
    static const size_t bytes[5] = {8, 24, 40, 56, 72};
    for (int i = 0; i < 4; i++)
        kiln_msg_free(kiln_msg_new(bytes[i]));
    kiln_msg *first = kiln_msg_new(bytes[4]);
    assert_non_null(first);
    kiln_msg_free(first);
#ifdef KILN_TEST_JEMALLOC
    uint64_t before = thread_allocated();
#endif
    for (int i = 0; i < 1000; i++) {
        kiln_msg *m = kiln_msg_new(bytes[4]);
        assert_non_null(m);
        kiln_msg_set_term(m, kiln_small(i));
        assert_int_equal(kiln_small_value(kiln_msg_term(m)), i);
        kiln_msg_free(m);
    }
#ifdef KILN_TEST_JEMALLOC
    /* 0 when reused; 1000 blocks (160 KB) when every one was allocated. */
    assert_true(thread_allocated() - before < 8192);
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blocks_follow_the_sizes_in_use),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
