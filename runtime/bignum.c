/* Big integer helpers: comparison, conversion to double and to decimal. */
#include "bignum.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"

size_t kiln_mag_trim(const uint64_t *d, size_t n)
{
    while (n > 0 && d[n - 1] == 0)
        n--;
    return n;
}

int kiln_mag_cmp(const uint64_t *a, size_t na, const uint64_t *b, size_t nb)
{
    na = kiln_mag_trim(a, na);
    nb = kiln_mag_trim(b, nb);
    if (na != nb)
        return na < nb ? -1 : 1;
    for (size_t i = na; i-- > 0;) {
        if (a[i] != b[i])
            return a[i] < b[i] ? -1 : 1;
    }
    return 0;
}

int kiln_int_cmp_double(bool neg, const uint64_t *mag, size_t n, double d)
{
    n = kiln_mag_trim(mag, n);
    int isign = n == 0 ? 0 : (neg ? -1 : 1);
    int dsign = d > 0 ? 1 : (d < 0 ? -1 : 0);
    if (isign != dsign)
        return isign < dsign ? -1 : 1;
    if (isign == 0)
        return 0;
    /* |d| = mant * 2^shift exactly, with a 53-bit mant; turning the integer
     * part of |d| into digits lets a big compare exactly, with no rounding. */
    int e;
    double fr = frexp(fabs(d), &e);
    uint64_t mant = (uint64_t)ldexp(fr, 53);
    int shift = e - 53;
    int r;
    if (shift >= 0) {
        uint64_t dd[18] = {0}; /* 53 + 971 bits at most */
        size_t w = (size_t)shift / 64;
        unsigned b = (unsigned)shift % 64;
        dd[w] = mant << b;
        if (b)
            dd[w + 1] = mant >> (64 - b);
        r = kiln_mag_cmp(mag, n, dd, w + 2);
    } else {
        unsigned rs = (unsigned)-shift;
        uint64_t ip = rs >= 64 ? 0 : mant >> rs;
        bool frac = rs >= 64 ? mant != 0 : (mant & ((UINT64_C(1) << rs) - 1)) != 0;
        r = kiln_mag_cmp(mag, n, &ip, 1);
        if (r == 0 && frac)
            r = -1;
    }
    return neg ? -r : r;
}

double kiln_int_to_double(bool neg, const uint64_t *mag, size_t n)
{
    n = kiln_mag_trim(mag, n);
    if (n == 0)
        return 0.0;
    if (n > 17)
        return neg ? -HUGE_VAL : HUGE_VAL;
    /* Take the top 64 significant bits and fold every lower bit into bit 0:
     * 64 bits leave 11 below the double's 53, so bit 0 acts as the sticky
     * bit and the hardware conversion rounds correctly. */
    unsigned lz = (unsigned)__builtin_clzll(mag[n - 1]);
    uint64_t top = mag[n - 1] << lz;
    bool sticky = false;
    if (n >= 2) {
        if (lz)
            top |= mag[n - 2] >> (64 - lz);
        sticky = lz ? (mag[n - 2] << lz) != 0 : false;
        for (size_t i = 0; i + 2 < n && !sticky; i++)
            sticky = mag[i] != 0;
    }
    if (sticky)
        top |= 1;
    long exp2 = (long)(n - 1) * 64 - (long)lz;
    double v = ldexp((double)top, (int)exp2);
    return neg ? -v : v;
}

#define CHUNK_DIV UINT64_C(10000000000000000000) /* 10^19 */

size_t kiln_int_to_decimal(char *buf, size_t size, bool neg, const uint64_t *mag, size_t n)
{
    n = kiln_mag_trim(mag, n);
    if (n > SIZE_MAX / 8 / 3)
        return SIZE_MAX;
    /* Peel base-10^19 chunks off a scratch copy, least significant first. */
    uint64_t *tmp = kiln_malloc((n ? n : 1) * 8 + (2 * n + 2) * 8);
    if (!tmp)
        return SIZE_MAX;
    uint64_t *chunks = tmp + (n ? n : 1);
    if (n)
        memcpy(tmp, mag, n * 8);
    size_t nchunks = 0, len = n;
    do {
        __extension__ unsigned __int128 rem = 0;
        for (size_t i = len; i-- > 0;) {
            __extension__ unsigned __int128 cur = (rem << 64) | tmp[i];
            tmp[i] = (uint64_t)(cur / CHUNK_DIV);
            rem = cur % CHUNK_DIV;
        }
        chunks[nchunks++] = (uint64_t)rem;
        len = kiln_mag_trim(tmp, len);
    } while (len > 0);

    size_t out = 0;
    char piece[32];
    if (neg && n > 0) {
        if (out + 1 < size)
            buf[out] = '-';
        out++;
    }
    for (size_t i = nchunks; i-- > 0;) {
        int k = i == nchunks - 1 ? snprintf(piece, sizeof piece, "%llu", (unsigned long long)chunks[i])
                                 : snprintf(piece, sizeof piece, "%019llu", (unsigned long long)chunks[i]);
        for (int j = 0; j < k; j++, out++) {
            if (out + 1 < size)
                buf[out] = piece[j];
        }
    }
    if (size > 0)
        buf[out < size ? out : size - 1] = '\0';
    kiln_free(tmp);
    return out;
}
