/* Parsing one distribution frame's payload (after the u32 length), with
 * no I/O and no node: the part of a connection that hostile bytes reach
 * first, kept pure so it can be fuzzed on its own. */
#ifndef KILN_DIST_FRAME_H
#define KILN_DIST_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/etf.h"

typedef struct kiln_frame {
    kiln_msg *ctrl;  /* root: the control tuple, op checked */
    kiln_msg *msg;   /* the message/reason term after it, or NULL */
    int64_t op;
} kiln_frame;

/* Decode payload: pass-through ('p' + whole terms) or a distribution
 * header without atom-cache refs (131, 68, 0 + bare terms). The control
 * tuple's op must be known and the tuple the arity that op has, with a
 * following term exactly when the op takes one. KILN_OK fills out (free
 * with kiln_frame_free); otherwise an error and nothing to free. */
int kiln_frame_parse(const uint8_t *p, size_t len, const kiln_etf_decode_opts *opts, kiln_frame *out);
void kiln_frame_free(kiln_frame *f);

#endif
