/* Kiln allocates through these names. Debian's jemalloc is built without a
 * symbol prefix, so linking libkiln against it replaces malloc for the whole
 * program (which is what we want: messages are allocated on one worker and
 * freed on another, the pattern jemalloc's per-thread caches handle well).
 * Sanitizer builds leave jemalloc out so ASan/TSan interpose malloc. */
#ifndef KILN_RUNTIME_ALLOC_H
#define KILN_RUNTIME_ALLOC_H

#include <stdlib.h>

#define kiln_malloc(n) malloc(n)
#define kiln_calloc(n, s) calloc(n, s)
#define kiln_realloc(p, n) realloc(p, n)
/* jemalloc's free(NULL) is no quicker than a free (tens of
 * instructions), and several paths free pointers that are mostly NULL. */
static inline void kiln_free(void *p)
{
    if (p)
        free(p);
}

/* Blocks whose size the freeing side knows (message arenas). With jemalloc
 * the size spares free() its look-up; mallocx/sdallocx are jemalloc's own
 * names, so the pair stays jemalloc's even where another malloc wins the
 * symbol interposition. */
#ifdef KILN_JEMALLOC
void *mallocx(size_t size, int flags);
void sdallocx(void *ptr, size_t size, int flags);
#define kiln_malloc_sized(n) mallocx(n, 0)
#define kiln_free_sized(p, n) sdallocx(p, n, 0)
#else
#define kiln_malloc_sized(n) malloc(n)
#define kiln_free_sized(p, n) ((void)(n), free(p))
#endif

#endif
