/* Outgoing atom cache (see atom_cache_out.h). */
#include "dist/atom_cache_out.h"

#include <stdbool.h>
#include <string.h>

void kiln_out_refs_init(kiln_out_refs *r)
{
    r->n = 0;
    r->max_header = 1;
    r->any_long = false;
    /* ref_of is read only where used says so: no need to clear 2 KB. */
    memset(r->used, 0, sizeof r->used);
}

void kiln_out_refs_clear(kiln_out_refs *r)
{
    /* A byte of used holds only slots that are in slot[] too. */
    for (size_t i = 0; i < r->n; i++)
        r->used[r->slot[i] / 8] = 0;
    r->n = 0;
    r->max_header = 1;
    r->any_long = false;
}

int kiln_out_refs_add(kiln_out_refs *r, kiln_term atom, unsigned s)
{
    size_t len;
    if (r->n == KILN_ATOM_CACHE_MAX_REFS || !kiln_atom_text(atom, &len))
        return -1;
    r->used[s / 8] |= (uint8_t)(1u << (s % 8));
    r->ref_of[s] = (uint8_t)r->n;
    r->atom[r->n] = atom;
    r->slot[r->n] = (uint16_t)s;
    /* A flag nibble, the index, a length of up to two bytes, the text. */
    r->max_header += 1 + 3 + len;
    r->any_long |= len > 255;
    return (int)r->n++;
}

int kiln_out_refs_hook(void *arg, kiln_term atom) { return kiln_out_refs_index(arg, atom); }

size_t kiln_out_refs_header(const kiln_out_refs *r, kiln_out_cache *c, uint8_t *out)
{
    size_t n = r->n;
    out[0] = (uint8_t)n;
    if (n == 0)
        return 1;
    /* Long atoms (two length bytes) as soon as one new entry needs them;
     * only a message with a long atom at all has to look. */
    bool long_atoms = false;
    for (size_t i = 0; r->any_long && i < n; i++) {
        size_t len = 0;
        if (c->slot[r->slot[i]] != r->atom[i] && kiln_atom_text(r->atom[i], &len) && len > 255)
            long_atoms = true;
    }
    /* The flag nibbles are written a byte (two refs) at a time, not or-ed
     * into a cleared array: this runs for every frame, under the lock. */
    size_t o = 1 + n / 2 + 1;
    unsigned low = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned s = r->slot[i];
        kiln_term a = r->atom[i];
        bool fresh = c->slot[s] != a;
        unsigned nib = (s >> 8) | (fresh ? 8u : 0u);
        if (i % 2 == 0)
            low = nib;
        else
            out[1 + i / 2] = (uint8_t)(low | nib << 4);
        out[o++] = (uint8_t)(s & 0xFF);
        if (fresh) {
            size_t len;
            const char *text = kiln_atom_text(a, &len);
            if (long_atoms)
                out[o++] = (uint8_t)(len >> 8);
            out[o++] = (uint8_t)len;
            memcpy(out + o, text, len);
            o += len;
            c->slot[s] = a;
        }
    }
    /* The last flag byte: the odd ref's nibble, then the long-atoms flag. */
    out[1 + n / 2] = (uint8_t)((n % 2 ? low : 0) | (long_atoms ? 1u << (4 * (n % 2)) : 0));
    return o;
}
