/* libFuzzer target for the ETF decoder. Any input: decode must return an
 * error or a term; a term must re-encode, decode again to an equal term,
 * and re-encode to the same bytes (the encoding is a fixpoint).
 *
 * Every input is also decoded with kiln_etf_decode_into, which always takes
 * the two passes, while kiln_etf_decode takes one for short inputs: both
 * must agree on the result code, the bytes used and the term.
 *
 * The first byte picks the mode, the rest is the input:
 *   bit 0: refuse new atoms (keeps the atom table from filling up)
 *   bit 1: bare term (as in a distribution header, with two atom refs)
 *   bits 2-3: depth limit 10000 / 50 / 3 / 1 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/etf.h"
#include "kiln/kiln.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_roundtrip(kiln_term t, const kiln_etf_decode_opts *o)
{
    uint8_t *a, *b;
    size_t an, bn;
    kiln_t2b_opts to = {0, 2, o->ctx};
    if (kiln_etf_term_to_bytes(t, &to, &a, &an) != KILN_OK)
        abort();
    kiln_etf_decode_opts o2 = *o;
    o2.max_depth = 0;
    o2.existing_atoms_only = false; /* every atom in t exists by now */
    kiln_msg *m = NULL;
    if (kiln_etf_decode(a, an, &o2, &m, NULL) != KILN_OK)
        abort();
    if (!kiln_term_eq(kiln_msg_term(m), t))
        abort();
    if (kiln_etf_term_to_bytes(kiln_msg_term(m), &to, &b, &bn) != KILN_OK)
        abort();
    if (an != bn || memcmp(a, b, an) != 0)
        abort();
    free(a);
    free(b);
    kiln_msg_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static kiln_term refs[2];
    if (!refs[0]) {
        if (kiln_atoms_init() != KILN_OK)
            abort();
        refs[0] = kiln_atom_c("fuzz_ref0");
        refs[1] = kiln_atom_c("fuzz_ref1");
    }
    if (size < 1)
        return 0;
    static const size_t depths[4] = {10000, 50, 3, 1};
    uint8_t mode = data[0];
    kiln_etf_decode_opts o = {
        .max_depth = depths[(mode >> 2) & 3],
        .max_uncompressed = 1 << 20,
        .atom_refs = refs,
        .n_atom_refs = 2,
        .existing_atoms_only = mode & 1,
    };
    kiln_msg *m = NULL;
    size_t used = 0;
    int rc = (mode & 2) ? kiln_etf_decode_bare(data + 1, size - 1, &o, &m, &used)
                        : kiln_etf_decode(data + 1, size - 1, &o, &m, NULL);
    kiln_msg *m2 = kiln_msg_new(0);
    kiln_term t2;
    size_t used2 = 0;
    if (!m2)
        abort();
    int rc2 = kiln_etf_decode_into(m2, data + 1, size - 1, mode & 2, &o, &t2, (mode & 2) ? &used2 : NULL);
    if (rc2 != rc || (rc == KILN_OK && (used2 != used || !kiln_term_eq(t2, kiln_msg_term(m)))))
        abort();
    kiln_msg_free(m2);
    if (rc == KILN_OK) {
        if ((mode & 2) && used > size - 1)
            abort();
        check_roundtrip(kiln_msg_term(m), &o);
        kiln_msg_free(m);
    } else if (m) {
        abort();
    }
    return 0;
}
