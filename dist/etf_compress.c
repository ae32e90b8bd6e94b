/* zlib for compressed terms (131, 80, UncompressedSize, zlib stream). */
#include <limits.h>
#include <string.h>
#include <zlib.h>

#include "dist/etf_internal.h"
#include "runtime/alloc.h"

int etf_inflate(const uint8_t *in, size_t inlen, size_t expect, uint8_t **out, size_t *consumed)
{
    *out = NULL;
    *consumed = 0;
    if (inlen > UINT_MAX || expect > UINT_MAX)
        return KILN_EBADLENGTH;
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit(&zs) != Z_OK)
        return KILN_ENOMEM;
    /* Start small and double: the declared size is only an upper bound we
     * trust once the data really inflates that far. */
    size_t cap = expect < 4096 ? expect : 4096;
    if (cap == 0)
        cap = 1;
    uint8_t *buf = kiln_malloc(cap);
    if (!buf) {
        inflateEnd(&zs);
        return KILN_ENOMEM;
    }
    zs.next_in = (Bytef *)(uintptr_t)in;
    zs.avail_in = (uInt)inlen;
    size_t have = 0;
    int rc = KILN_OK;
    for (;;) {
        if (have == cap) {
            if (cap >= expect) {
                /* Full at the declared size: anything more is a lie. */
                uint8_t probe;
                zs.next_out = &probe;
                zs.avail_out = 1;
                int z = inflate(&zs, Z_FINISH);
                if (z == Z_STREAM_END && zs.avail_out == 1)
                    break;
                rc = (z == Z_STREAM_END || z == Z_OK || z == Z_BUF_ERROR) ? KILN_EBADLENGTH : KILN_EZLIB;
                break;
            }
            size_t ncap = cap * 2 > expect ? expect : cap * 2;
            uint8_t *nb = kiln_realloc(buf, ncap);
            if (!nb) {
                rc = KILN_ENOMEM;
                break;
            }
            buf = nb;
            cap = ncap;
        }
        zs.next_out = buf + have;
        zs.avail_out = (uInt)(cap - have);
        int z = inflate(&zs, Z_FINISH);
        have = cap - zs.avail_out;
        if (z == Z_STREAM_END) {
            if (have != expect)
                rc = KILN_EBADLENGTH;
            break;
        }
        if (z == Z_BUF_ERROR && zs.avail_out != 0) {
            /* No progress possible with room left: the input ran out. */
            rc = KILN_EZLIB;
            break;
        }
        if (z != Z_OK && z != Z_BUF_ERROR) {
            rc = KILN_EZLIB;
            break;
        }
    }
    size_t left = zs.avail_in;
    inflateEnd(&zs);
    if (rc != KILN_OK) {
        kiln_free(buf);
        return rc;
    }
    *out = buf;
    *consumed = inlen - left;
    return KILN_OK;
}

int etf_deflate(const uint8_t *in, size_t inlen, int level, uint8_t *out, size_t *outlen)
{
    if (inlen > UINT_MAX || *outlen > UINT_MAX)
        return KILN_ENOTSUP;
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    /* deflateInit's defaults (window 15, memLevel 8) are what erts uses, so
     * the same zlib produces the same bytes as term_to_binary. */
    if (deflateInit(&zs, level) != Z_OK)
        return KILN_ENOMEM;
    zs.next_in = (Bytef *)(uintptr_t)in;
    zs.avail_in = (uInt)inlen;
    zs.next_out = out;
    zs.avail_out = (uInt)*outlen;
    int z = deflate(&zs, Z_FINISH);
    size_t n = (size_t)zs.total_out;
    deflateEnd(&zs);
    if (z != Z_STREAM_END)
        return KILN_ENOTSUP;
    *outlen = n;
    return KILN_OK;
}
