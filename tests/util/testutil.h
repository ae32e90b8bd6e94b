/* Helpers shared by the cmocka tests. */
#ifndef KILN_TESTUTIL_H
#define KILN_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kiln/kiln.h"

/* Path of a file under tests/data (KILN_TEST_DATA, set by ctest). */
const char *kiln_test_data_path(const char *name, char *buf, size_t size);

#endif
