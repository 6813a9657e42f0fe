/*
 * Fuzz target for what a hostile milter can send us: the input is the byte
 * stream from the milter socket.  It is cut into packets exactly as the
 * client does (a copy of each packet in an exact-size allocation, so a read
 * past the end is caught), every packet is decoded, and header
 * modifications go through the same normalisation the client applies
 * before anything reaches a spool file and are applied to a header section.
 * The same bytes are also split as a message's header section.  Invariants
 * are checked after each decode.
 *
 *   clang -fsanitize=fuzzer,address,undefined -Isrc ... fuzz_milter_reply.c
 *   (or with tests/fuzz/standalone.c and any compiler: runs the files in argv)
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "milter_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fuzz_check(const struct milter_packet *pkt, const struct milter_reply *r)
{
	const char *end = (const char *)pkt->data.ptr + pkt->data.len;
	const char *strs[3] = { r->name, r->value, r->args };
	size_t i;

	for (i = 0; i < 3; i++) {
		if (strs[i] == NULL)
			continue;
		/* Every string lies inside the packet with its NUL. */
		if (strs[i] < (const char *)pkt->data.ptr || strs[i] >= end ||
		    memchr(strs[i], '\0', (size_t)(end - strs[i])) == NULL)
			abort();
	}
	if (r->kind == MILTER_RK_REPLYCODE && (r->code < 400 || r->code > 599))
		abort();
	if (r->kind == MILTER_RK_REPLBODY && r->body.len != pkt->data.len)
		abort();
}

/* The modification applied to a small header section. */
static void
fuzz_apply(const struct milter_reply *r, char *value)
{
	static const char hdr[] = "Subject: x\r\nX-A: 1\r\n\t2\r\nx-a: 3\r\n";
	struct milter_mod mod = { MILTER_MOD_ADDHEADER, r->index, (char *)r->name, value, NULL,
	    "fuzz" };
	struct mx_buf b;

	if (r->kind == MILTER_RK_INSHEADER)
		mod.kind = MILTER_MOD_INSHEADER;
	else if (r->kind == MILTER_RK_CHGHEADER)
		mod.kind = MILTER_MOD_CHGHEADER;
	mx_buf_init(&b, 0);
	if (milter_headers_apply((const unsigned char *)hdr, sizeof(hdr) - 1, &mod, 1, &b) != 0)
		abort();
	mx_buf_free(&b);
}

/* The input as a message: split its header section. */
static void
fuzz_split(const uint8_t *data, size_t size)
{
	struct mx_view name, value;
	size_t off = 0, used;

	while (off < size && milter_header_next(data + off, size - off, &name, &value, &used) == 1) {
		if (used == 0 || used > size - off || name.len == 0 ||
		    value.ptr + value.len > data + size)
			abort();
		off += used;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0;
	struct mx_buf out;

	mx_buf_init(&out, 0);
	while (off < size) {
		struct milter_packet pkt;
		struct milter_reply r;
		const char *err;
		unsigned char *copy;

		if (milter_packet_parse(data + off, size - off, MILTER_PACKET_MAX, &pkt, &err) !=
		    MILTER_PARSE_DONE)
			break;
		off += pkt.size;
		if ((copy = malloc(pkt.data.len ? pkt.data.len : 1)) == NULL)
			abort();
		memcpy(copy, pkt.data.ptr, pkt.data.len);
		pkt.data.ptr = copy;
		if (milter_reply_decode(&pkt, &r, &err) == 0) {
			size_t s;

			fuzz_check(&pkt, &r);
			(void)milter_reply_is_final(r.kind);
			(void)milter_reply_kind_name(r.kind);
			if (r.name != NULL && r.value != NULL) {
				mx_buf_reset(&out);
				if (milter_header_value_normalize(r.name, r.value, &out, &err) ==
				    0 && mx_buf_cstr(&out) != NULL)
					fuzz_apply(&r, (char *)out.data);
			}
			for (s = 0; s < MILTER_NSTAGES; s++)
				if (r.symlist[s] != NULL)
					(void)milter_symlist_has(r.symlist[s], "{mail_addr}");
		}
		free(copy);
	}
	mx_buf_free(&out);
	fuzz_split(data, size);
	return 0;
}
