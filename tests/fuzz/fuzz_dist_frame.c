/* libFuzzer target: a distribution frame's payload, as a peer would send
 * it after the handshake (dist/frame.c). Whatever parses must be a known
 * control message of the right shape; nothing may crash, leak or read out
 * of bounds. With FUZZ_FRAME_SEEDS=dir set, writes seed frames (real
 * encodings of every control message) there instead and exits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/atom_cache_out.h"
#include "dist/frame.h"
#include "kiln/kiln.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static kiln_etf_ctx ctx;

static void put_seed(const char *dir, int k, const uint8_t *buf, size_t n);

static void write_seed(const char *dir, int k, kiln_term ctrl, kiln_term msg, bool header)
{
    kiln_etf_enc_opts o = {.ctx = &ctx, .minor_version = 2};
    kiln_etf_enc *e = kiln_etf_enc_new(&o);
    static const uint8_t pass[1] = {'p'}, hdr[3] = {131, 68, 0};
    kiln_etf_enc_raw(e, header ? hdr : pass, header ? 3 : 1);
    if (header) {
        kiln_etf_enc_term(e, ctrl);
        if (!kiln_is_none(msg))
            kiln_etf_enc_term(e, msg);
    } else {
        kiln_etf_enc_whole(e, ctrl);
        if (!kiln_is_none(msg))
            kiln_etf_enc_whole(e, msg);
    }
    size_t n = kiln_etf_enc_size(e);
    uint8_t *buf = malloc(n + 2);
    buf[0] = (uint8_t)(n >> 8); /* the harness reads u16-framed runs */
    buf[1] = (uint8_t)n;
    kiln_etf_enc_copy(e, buf + 2);
    put_seed(dir, k, buf, n + 2);
    free(buf);
    kiln_etf_enc_free(e);
}

static void put_seed(const char *dir, int k, const uint8_t *buf, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/seed-%02d", dir, k);
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(buf, 1, n, f);
        fclose(f);
    }
}

/* One u16-framed 131,68 frame with atom-cache refs, as Kiln sends it,
 * appended to out; the cache carries over to the next frame. */
static size_t cached_frame(uint8_t *out, kiln_out_cache *c, kiln_term ctrl, kiln_term msg)
{
    kiln_out_refs r;
    kiln_out_refs_init(&r);
    kiln_etf_enc_opts o = {.ctx = &ctx, .minor_version = 2, .atom_ref = kiln_out_refs_hook, .atom_ref_arg = &r};
    kiln_etf_enc *e = kiln_etf_enc_new(&o);
    kiln_etf_enc_term(e, ctrl);
    if (!kiln_is_none(msg))
        kiln_etf_enc_term(e, msg);
    out[2] = 131;
    out[3] = 68;
    size_t n = 2 + kiln_out_refs_header(&r, c, out + 4);
    kiln_etf_enc_copy(e, out + 2 + n);
    n += kiln_etf_enc_size(e);
    kiln_etf_enc_free(e);
    out[0] = (uint8_t)(n >> 8);
    out[1] = (uint8_t)n;
    return n + 2;
}

/* A SEND of a fun whose module and pid node are cache refs, as erl sends
 * funs when the atom cache is agreed. */
static size_t fun_frame(uint8_t *out)
{
    static const uint8_t head[] = {131, 68, 2, 0x88, 0, 1, 5, 'l', 'i', 's', 't', 's', 2, 4, 'p', '@', 'h', 'x',
                                   104, 3, 97, 2, 119, 0, 88, 119, 9, 'k', 'i', 'l', 'n', '@', 'h', 'o', 's', 't',
                                   0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 5};
    static const uint8_t fun[] = {112, 0, 0, 0, 52, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                  0, 0, 0, 0, 0, 0, 0, 1, 82, 0, 97, 0, 97, 0, 88, 82, 1, 0, 0, 0, 1, 0, 0, 0, 0,
                                  0, 0, 0, 2, 82, 0};
    size_t n = sizeof head + sizeof fun;
    out[0] = (uint8_t)(n >> 8);
    out[1] = (uint8_t)n;
    memcpy(out + 2, head, sizeof head);
    memcpy(out + 2 + sizeof head, fun, sizeof fun);
    return n + 2;
}

static void seeds(const char *dir)
{
    kiln_msg *m = kiln_msg_new(4096);
    kiln_term peer = kiln_atom_c("peer@host");
    kiln_term pid = kiln_ext_pid(m, peer, 7, 0, 5), me = kiln_local_pid(3, 0);
    uint32_t w[3] = {1, 2, 3};
    kiln_term ref = kiln_ref(m, peer, 5, w, 3);
    kiln_term msg = kiln_build(m, "{hello,[1,2|3],#{a => ~b},~f}", "b", (size_t)1, 3.5);
    if (kiln_is_none(msg)) {
        /* Seeds without a payload would all be rejected: say so. */
        fprintf(stderr, "fuzz_dist_frame: the seed message did not build\n");
        exit(1);
    }
    kiln_term ctrls[] = {
        kiln_build(m, "{2,'',~t}", me),
        kiln_build(m, "{22,~t,~t}", pid, me),
        kiln_build(m, "{6,~t,'',echo}", pid),
        kiln_build(m, "{1,~t,~t}", pid, me),
        kiln_build(m, "{3,~t,~t,boom}", pid, me),
        kiln_build(m, "{8,~t,~t,kill}", pid, me),
        kiln_build(m, "{19,~t,~t,~t}", pid, me, ref),
        kiln_build(m, "{20,~t,name,~t}", pid, ref),
        kiln_build(m, "{21,~t,~t,~t,bye}", pid, me, ref),
        kiln_build(m, "{35,42,~t,~t}", pid, me),
        kiln_build(m, "{29,~t,~t,~t,{erpc,execute_call,4},[monitor]}", ref, pid, pid),
        kiln_build(m, "{31,~t,~t,2,~t}", ref, me, pid),
        kiln_build(m, "{33,~t,~t}", pid, ref),
    };
    bool with_msg[] = {true, true, true, false, false, false, false, false, false, false, true, false, true};
    int k = 0;
    for (size_t i = 0; i < sizeof ctrls / sizeof ctrls[0]; i++) {
        kiln_term body = with_msg[i] ? (i == 10 ? kiln_build(m, "[~t,kiln,info,[]]", ref) : msg) : KILN_NONE;
        write_seed(dir, k++, ctrls[i], body, false);
        write_seed(dir, k++, ctrls[i], body, true);
    }
    /* The atom cache: a run of frames where atoms enter the cache, then
     * come back by slot alone. */
    static uint8_t buf[16384];
    static kiln_out_cache cache;
    size_t n = 0;
    for (size_t i = 0; i < sizeof ctrls / sizeof ctrls[0] && n < sizeof buf - 2048; i++)
        n += cached_frame(buf + n, &cache, ctrls[i], with_msg[i] ? msg : KILN_NONE);
    put_seed(dir, k++, buf, n);
    n = fun_frame(buf);
    put_seed(dir, k++, buf, n);
    kiln_msg_free(m);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    kiln_atoms_init();
    ctx.node = kiln_atom_c("kiln@host");
    ctx.creation = 5;
    const char *dir = getenv("FUZZ_FRAME_SEEDS");
    if (dir) {
        seeds(dir);
        exit(0);
    }
    return 0;
}

/* The frame's parts, for comparing the two ways: a send's destination
 * and message, a monitor's target, watcher and reference. */
static void parts(const kiln_frame *f, kiln_term out[4])
{
    kiln_term t = f->ctrl ? kiln_msg_term(f->ctrl) : KILN_NONE;
    bool monitor = f->op == 19 || f->op == 20;
    out[0] = f->ctrl ? kiln_tuple_get(t, 2) : f->to;
    out[1] = f->msg ? kiln_msg_term(f->msg) : KILN_NONE;
    out[2] = !monitor ? KILN_NONE : f->ctrl ? kiln_tuple_get(t, 1) : f->from;
    out[3] = !monitor ? KILN_NONE : f->ctrl ? kiln_tuple_get(t, 3) : f->ref;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kiln_etf_decode_opts opts = {.ctx = &ctx, .max_depth = 200, .max_uncompressed = 1 << 20};
    /* The input is a run of frames (u16 length each) on one connection,
     * so the atom cache and fragment reassembly see sequences too. A
     * second state sees the same frames with every control tuple built:
     * both must agree on every frame. */
    static kiln_frame_state st, plain;
    kiln_frame_state_init(&st);
    kiln_frame_state_init(&plain);
    st.max_message = plain.max_message = 1 << 20;
    plain.no_fast_send = true;
    size_t off = 0;
    while (size - off >= 2) {
        size_t len = (size_t)data[off] << 8 | data[off + 1];
        off += 2;
        if (len > size - off)
            len = size - off;
        kiln_frame f, g;
        /* A continuation that fits goes in place, as the reader takes
         * large ones; the rest through kiln_frame_parse. */
        uint8_t *dst;
        int rc;
        if (kiln_frame_slice_room(&st, data + off, len, &dst)) {
            memcpy(dst, data + off + 18, len - 18);
            rc = kiln_frame_parse_placed(&st, data + off, len, &opts, &f);
        } else {
            rc = kiln_frame_parse(&st, data + off, len, &opts, &f);
        }
        int rc2 = kiln_frame_parse(&plain, data + off, len, &opts, &g);
        if (rc != rc2)
            abort();
        if (rc == KILN_OK) {
            if ((f.ctrl && !kiln_is_tuple(kiln_msg_term(f.ctrl))) || f.op < 1 || f.op != g.op)
                abort(); /* parse promised a checked control tuple */
            if (!f.ctrl) {
                kiln_term a[4], b[4];
                parts(&f, a);
                parts(&g, b);
                for (int k = 0; k < 4; k++)
                    if (a[k] != b[k] && (kiln_is_none(a[k]) || kiln_is_none(b[k]) || kiln_term_cmp_exact(a[k], b[k]) != 0))
                        abort();
            }
            kiln_frame_free(&f);
            kiln_frame_free(&g);
        }
        off += len;
    }
    kiln_frame_state_fini(&st);
    kiln_frame_state_fini(&plain);
    return 0;
}
