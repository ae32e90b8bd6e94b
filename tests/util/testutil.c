#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>

const char *kiln_test_data_path(const char *name, char *buf, size_t size)
{
    const char *dir = getenv("KILN_TEST_DATA");
    snprintf(buf, size, "%s/%s", dir ? dir : "tests/data", name);
    return buf;
}
