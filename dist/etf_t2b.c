/* term_to_binary / binary_to_term for users, with OTP's options. */
#include <string.h>
#include <zlib.h>

#include "dist/etf_internal.h"
#include "runtime/alloc.h"

int kiln_etf_term_to_bytes(kiln_term t, const kiln_t2b_opts *opts, uint8_t **out, size_t *len)
{
    static const kiln_t2b_opts defaults = KILN_T2B_OPTS_DEFAULT;
    if (!out || !len)
        return KILN_EINVAL;
    *out = NULL;
    *len = 0;
    if (!opts)
        opts = &defaults;
    if (opts->compressed < -1 || opts->compressed > 9 || opts->minor_version < 0 || opts->minor_version > 2)
        return KILN_EINVAL;
    kiln_etf_enc_opts eo = {opts->ctx, opts->minor_version, SIZE_MAX, NULL, NULL};
    kiln_etf_enc *e = kiln_etf_enc_new(&eo);
    if (!e)
        return KILN_ENOMEM;
    int rc = kiln_etf_enc_whole(e, t);
    size_t n = kiln_etf_enc_size(e);
    uint8_t *plain = NULL;
    if (rc == KILN_OK && !(plain = kiln_malloc(n)))
        rc = KILN_ENOMEM;
    if (rc == KILN_OK)
        kiln_etf_enc_copy(e, plain);
    kiln_etf_enc_free(e);
    if (rc != KILN_OK)
        return rc;
    if (opts->compressed != 0) {
        /* OTP's rule (erts_term_to_binary): give zlib no more room than the
         * plain term minus the 5 bytes the compressed header adds, and keep
         * the plain form when it does not fit. */
        size_t real = n - 1;
        size_t room = real < 5 ? 0 : real - 5;
        uint8_t *z = kiln_malloc(6 + room);
        if (!z) {
            kiln_free(plain);
            return KILN_ENOMEM;
        }
        int level = opts->compressed < 0 ? Z_DEFAULT_COMPRESSION : opts->compressed;
        if (room > 0 && real <= UINT32_MAX && etf_deflate(plain + 1, real, level, z + 6, &room) == KILN_OK) {
            z[0] = KILN_ETF_VERSION;
            z[1] = ETF_COMPRESSED;
            etf_put32(z + 2, (uint32_t)real);
            kiln_free(plain);
            *out = z;
            *len = 6 + room;
            return KILN_OK;
        }
        kiln_free(z);
    }
    *out = plain;
    *len = n;
    return KILN_OK;
}

int kiln_term_to_binary(kiln_msg *m, kiln_term t, const kiln_t2b_opts *opts, kiln_term *out)
{
    uint8_t *bytes;
    size_t n;
    if (!m || !out)
        return KILN_EINVAL;
    int rc = kiln_etf_term_to_bytes(t, opts, &bytes, &n);
    if (rc != KILN_OK)
        return rc;
    *out = kiln_binary(m, bytes, n);
    kiln_free(bytes);
    return *out == KILN_NONE ? KILN_ENOMEM : KILN_OK;
}

int kiln_binary_to_term(kiln_term bin, const kiln_etf_decode_opts *opts, kiln_msg **out)
{
    const uint8_t *data;
    size_t len;
    if (!out)
        return KILN_EINVAL;
    *out = NULL;
    int rc = kiln_get_binary(bin, &data, &len);
    if (rc != KILN_OK)
        return rc;
    kiln_etf_decode_opts o = opts ? *opts : (kiln_etf_decode_opts){0};
    if (!o.source)
        /* A refcounted bin lends its bytes to the large binaries inside
         * (the decoder's eighth-of-the-blob rule bounds what they pin). */
        o.source = etf_bits_blob(bin);
    return kiln_etf_decode(data, len, &o, out, NULL);
}
