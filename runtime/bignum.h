/* Magnitude arithmetic for big integers: little-endian 64-bit digits. */
#ifndef KILN_RUNTIME_BIGNUM_H
#define KILN_RUNTIME_BIGNUM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Digits without the high zero ones. */
size_t kiln_mag_trim(const uint64_t *d, size_t n);
/* Compare two magnitudes: <0, 0, >0. */
int kiln_mag_cmp(const uint64_t *a, size_t na, const uint64_t *b, size_t nb);
/* Compare the integer (neg, mag) with a finite double by exact value. */
int kiln_int_cmp_double(bool neg, const uint64_t *mag, size_t n, double d);
/* Nearest double (round half to even); +-inf past the double range. */
double kiln_int_to_double(bool neg, const uint64_t *mag, size_t n);
/* Decimal text of the integer into buf (NUL-terminated when size > 0);
 * returns the length it needs, or SIZE_MAX if scratch memory ran out. */
size_t kiln_int_to_decimal(char *buf, size_t size, bool neg, const uint64_t *mag, size_t n);

#endif
