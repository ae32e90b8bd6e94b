/* Corpus test: every term_to_binary output the real node wrote
 * (gen_corpus.escript) must decode, and re-encode byte for byte where OTP's
 * bytes are canonical. Kiln's encodings of all terms are written out for
 * check_kiln.escript, which has erl decode them and compare with =:=.
 *
 * Usage: test_etf_corpus CORPUS.bin KILN_OUT.bin */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/etf.h"
#include "kiln/kiln.h"
#include "dist/etf_internal.h"
#include "runtime/message.h"

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

static void put32(FILE *f, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    fwrite(b, 1, 4, f);
}

static void show_diff(const char *name, const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    size_t i = 0;
    while (i < an && i < bn && a[i] == b[i])
        i++;
    fprintf(stderr, "  MISMATCH %s: otp %zu bytes, kiln %zu bytes, first difference at %zu\n", name, an, bn, i);
    size_t from = i > 8 ? i - 8 : 0;
    fprintf(stderr, "    otp :");
    for (size_t j = from; j < an && j < from + 24; j++)
        fprintf(stderr, " %u", a[j]);
    fprintf(stderr, "\n    kiln:");
    for (size_t j = from; j < bn && j < from + 24; j++)
        fprintf(stderr, " %u", b[j]);
    fprintf(stderr, "\n");
}

/* The iovec encoder (binaries lent, not copied) must produce the same bytes
 * as the flat helper. */
static int check_iov_encoder(kiln_term t, int minor, const uint8_t *want, size_t wlen)
{
    kiln_etf_enc_opts eo = {NULL, minor, 64, NULL, NULL};
    kiln_etf_enc *e = kiln_etf_enc_new(&eo);
    if (!e)
        return -1;
    int rc = kiln_etf_enc_whole(e, t);
    int bad = rc != KILN_OK || kiln_etf_enc_size(e) != wlen;
    if (!bad) {
        size_t n, total = 0;
        const struct iovec *iov = kiln_etf_enc_iov(e, &n);
        for (size_t i = 0; i < n && !bad; i++) {
            if (total + iov[i].iov_len > wlen || memcmp(want + total, iov[i].iov_base, iov[i].iov_len) != 0)
                bad = 1;
            total += iov[i].iov_len;
        }
        bad = bad || total != wlen;
    }
    /* Reuse after reset must work the same. */
    kiln_etf_enc_reset(e);
    if (!bad && (kiln_etf_enc_whole(e, t) != KILN_OK || kiln_etf_enc_size(e) != wlen))
        bad = 1;
    kiln_etf_enc_free(e);
    return bad ? -1 : 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s CORPUS.bin KILN_OUT.bin\n", argv[0]);
        return 2;
    }
    if (kiln_atoms_init() != KILN_OK)
        return 1;
    size_t len;
    uint8_t *data = slurp(argv[1], &len);
    if (!data) {
        fprintf(stderr, "cannot read corpus %s (did gen_corpus.escript run?)\n", argv[1]);
        return 1;
    }
    FILE *out = fopen(argv[2], "wb");
    if (!out) {
        perror(argv[2]);
        return 1;
    }
    size_t pos = 0, total = 0, identical = 0, canon = 0, noncanon = 0, failures = 0;
    while (pos < len) {
        if (len - pos < 2)
            break;
        size_t nl = (size_t)data[pos] << 8 | data[pos + 1];
        const uint8_t *raw_name = data + pos + 2;
        char name[160];
        snprintf(name, sizeof name, "%.*s", (int)(nl < 150 ? nl : 150), (const char *)raw_name);
        pos += 2 + nl;
        int is_canon = data[pos];
        int minor = data[pos + 1];
        int comp = (int8_t)data[pos + 2];
        size_t blen = be32(data + pos + 3);
        const uint8_t *bytes = data + pos + 7;
        pos += 7 + blen;
        total++;

        kiln_msg *m = NULL;
        int rc = kiln_etf_decode(bytes, blen, NULL, &m, NULL);
        if (rc != KILN_OK) {
            fprintf(stderr, "  DECODE FAILED %s: %s (%d)\n", name, kiln_strerror(rc), rc);
            failures++;
            continue;
        }
        /* One allocation holding exactly the measured words of term: sized
         * exactly by the first pass, or, for a short input decoded in one
         * pass, by the guess that must then have been enough (either up to
         * the allocator's size class, for a small message). */
        size_t words = 0;
        bool sized = kiln_etf_measure(bytes, blen, false, NULL, &words, NULL) == KILN_OK &&
                     !m->chunks && (size_t)(m->cur - m->inline_data) == words &&
                     (m->inline_words == kiln_msg_arena_words(words) ||
                      m->inline_words == kiln_msg_arena_words(etf_fast_words(blen - 1)));
        if (!sized) {
            fprintf(stderr, "  SIZING %s: measured %zu words, message is %zu bytes\n", name, words, kiln_msg_size(m));
            failures++;
        }
        kiln_term t = kiln_msg_term(m);
        kiln_t2b_opts to = {comp, minor, NULL};
        uint8_t *enc;
        size_t elen;
        rc = kiln_etf_term_to_bytes(t, &to, &enc, &elen);
        if (rc != KILN_OK) {
            fprintf(stderr, "  ENCODE FAILED %s: %s\n", name, kiln_strerror(rc));
            failures++;
            kiln_msg_free(m);
            continue;
        }
        if (is_canon) {
            canon++;
            if (elen == blen && memcmp(enc, bytes, blen) == 0) {
                identical++;
            } else {
                show_diff(name, bytes, blen, enc, elen);
                failures++;
            }
        } else {
            noncanon++;
        }
        /* The lending encoder agrees with the flat one (uncompressed). */
        if (comp == 0 && check_iov_encoder(t, minor, enc, elen) != 0) {
            fprintf(stderr, "  IOV ENCODER differs for %s\n", name);
            failures++;
        }
        /* A bare term (as inside a distribution header) decodes the same. */
        if (blen > 1 && bytes[1] != 80) {
            kiln_msg *m2 = NULL;
            size_t used = 0;
            rc = kiln_etf_decode_bare(bytes + 1, blen - 1, NULL, &m2, &used);
            if (rc != KILN_OK || used != blen - 1 || !kiln_term_eq(kiln_msg_term(m2), t)) {
                fprintf(stderr, "  BARE DECODE differs for %s (%d)\n", name, rc);
                failures++;
            }
            kiln_msg_free(m2);
        }
        uint16_t nl16 = (uint16_t)nl;
        uint8_t nlb[2] = {(uint8_t)(nl16 >> 8), (uint8_t)nl16};
        fwrite(nlb, 1, 2, out);
        fwrite(raw_name, 1, nl, out);
        put32(out, (uint32_t)blen);
        fwrite(bytes, 1, blen, out);
        put32(out, (uint32_t)elen);
        fwrite(enc, 1, elen, out);
        free(enc);
        kiln_msg_free(m);
    }
    fclose(out);
    free(data);
    printf("etf corpus: %zu terms, %zu canonical of which %zu byte-identical, %zu left to erl (=:=), %zu failures\n",
           total, canon, identical, noncanon, failures);
    if (total < 200) {
        fprintf(stderr, "corpus too small (%zu < 200)\n", total);
        return 1;
    }
    return failures ? 1 : 0;
}
