/* Thread-locals on hot paths. In the shared library the default (dynamic)
 * TLS model costs a call to __tls_get_addr per access; initial-exec is one
 * %fs-relative load. But a library that uses it at all has its whole TLS
 * block placed in the static TLS area, of which a library loaded with
 * dlopen gets only a little: so every thread-local of the library is
 * small, and per-thread tables are allocated on first use and reached
 * through one KILN_TLS pointer (tests/install dlopens the library). */
#ifndef KILN_TLS_H
#define KILN_TLS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#define KILN_TLS _Thread_local __attribute__((tls_model("initial-exec")))

/* A kind of per-thread table: `size` zeroed bytes per thread, freed when
 * the thread ends, after fini (if any) has emptied it. Define one with
 * KILN_TLS_TABLE(size, fini) as a static. */
struct kiln_tls_table {
    size_t size;
    void (*fini)(void *table);
    atomic_bool ready;
    pthread_key_t key;
};
#define KILN_TLS_TABLE(sz, fn) {.size = (sz), .fini = (fn)}

/* The calling thread's new table, also stored in *slot (the caller's
 * KILN_TLS pointer, reset to NULL when the thread ends); NULL, with *slot
 * untouched, if it cannot be had. Call only while *slot is NULL. */
void *kiln_tls_table_new(struct kiln_tls_table *t, void **slot);

#endif
