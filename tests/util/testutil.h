/* Helpers shared by the cmocka tests. */
#ifndef KILN_TESTUTIL_H
#define KILN_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kiln/kiln.h"

/* Path of a file under tests/data (KILN_TEST_DATA, set by ctest). */
const char *kiln_test_data_path(const char *name, char *buf, size_t size);

/* Start a runtime with n workers (0 = default) and the given config
 * tweaks (cfg may be NULL); fails the test on error. */
kiln_rt *kiln_test_rt(unsigned workers, const kiln_rt_config *cfg);

/* Wait until *flag becomes nonzero or ms pass; true if it did. Polls
 * every millisecond from the (non-Kiln) test thread. */
bool kiln_test_wait_flag(_Atomic int *flag, int ms);
/* Wait until *counter >= target or ms pass. */
bool kiln_test_wait_count(_Atomic long *counter, long target, int ms);

/* Run fn(arg) inside a new process and wait (up to ms) for it to return.
 * Fails the test if it does not finish. Assertions inside fn are allowed:
 * a failing cmocka assertion longjmps out of the process, so tests keep
 * their checks in the test thread and pass results back through arg. */
void kiln_test_run_in_process(kiln_rt *rt, void (*fn)(void *), void *arg, int ms);

/* A message holding one term built from a format (kiln_build). */
kiln_msg *kiln_test_msg(const char *fmt, ...);

/* Match-any predicate for kiln_receive. */
bool kiln_test_any(kiln_term t, void *arg);

#endif
