/*
 * libFuzzer target for the ClientHello reader.  The input is the client's
 * bytes; its last byte also picks the cap and how the input is cut into
 * segments (so the captures in tests/data work as seeds unchanged).  Each
 * input is fed twice, whole and in segments, and both runs must agree on
 * everything (result, reason, bytes consumed, SNI, ALPN, raw bytes); every
 * view is read end to end so the sanitizers see any overrun.  Run it with
 * the captures as a seed corpus:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *       tests/fuzz/fuzz_client_hello.c src/front_hello.c -o fuzz_client_hello
 *   ./fuzz_client_hello -max_total_time=60 corpus/ tests/data/
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "front_hello.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct outcome {
	enum front_hello_result r;
	enum front_hello_reason reason;
	size_t consumed;
	struct mx_view sni, alpn, raw;
	bool ech;
	uint16_t version;
};

static void
check(int cond)
{
	if (!cond)
		abort();
}

static bool
view_eq(struct mx_view a, struct mx_view b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static void
outcome_read(struct front_hello *h, size_t cap, enum front_hello_result r, size_t consumed,
    struct outcome *o)
{
	struct mx_view it, proto;
	size_t i, total = 0;
	enum front_alert alert;

	o->r = r;
	o->reason = front_hello_reason(h);
	o->consumed = consumed;
	o->sni = front_hello_sni(h);
	o->alpn = front_hello_alpn(h);
	o->raw = front_hello_raw(h);
	o->ech = front_hello_has_ech(h);
	o->version = front_hello_version(h);
	check(front_hello_reason_str(o->reason) != NULL);
	if (r == FRONT_HELLO_REJECT) {
		check(o->reason != FRONT_HELLO_OK);
		if (front_hello_alert(h, &alert)) {
			unsigned char rec[FRONT_ALERT_LEN];

			check(front_alert_write(rec, alert) == FRONT_ALERT_LEN);
		}
		return;
	}
	if (r != FRONT_HELLO_DONE)
		return;
	check(o->raw.len == consumed);
	check(o->raw.len <= (cap != 0 ? cap : FRONT_HELLO_MAX_DEFAULT));
	check(front_hello_records(h) >= 1);
	if (front_hello_has_sni(h)) {
		check(o->sni.len >= 1 && o->sni.len <= FRONT_HELLO_SNI_MAX);
		for (i = 0; i < o->sni.len; i++)
			check(o->sni.ptr[i] > 0x20 && o->sni.ptr[i] < 0x7f);
	} else
		check(o->sni.len == 0);
	it = o->alpn;
	while (front_hello_alpn_next(&it, &proto)) {
		check(proto.len >= 1);
		total += 1 + proto.len;
	}
	check(total == o->alpn.len);
}

/* Segment sizes from a seed: mostly small, sometimes large. */
static size_t
next_seg(uint32_t *s)
{
	*s = *s * 1103515245 + 12345;
	switch ((*s >> 16) & 3) {
	case 0:
		return 1;
	case 1:
		return 1 + ((*s >> 8) & 7);
	case 2:
		return 1 + ((*s >> 4) & 0x1ff);
	default:
		return 1 + ((*s >> 2) & 0x3fff);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t caps[] = { 0, 0, 0, 16384, 2048, 512, 64, 6 };
	struct front_hello whole, seg;
	struct outcome a, b;
	enum front_hello_result r;
	unsigned char *copy;
	size_t cap, off, n, used, total;
	uint32_t seed;

	if (size < 1)
		return 0;
	seed = data[size - 1];
	cap = caps[seed % (sizeof(caps) / sizeof(caps[0]))];

	/* Whole, from a private copy so that save() can be checked. */
	copy = malloc(size + 1);
	if (copy == NULL)
		return 0;
	if (size > 0)
		memcpy(copy, data, size);
	front_hello_init(&whole, cap);
	r = front_hello_feed(&whole, copy, size, &used);
	check(r != FRONT_HELLO_MORE || used == size);
	outcome_read(&whole, cap, r, used, &a);
	if (r == FRONT_HELLO_DONE)
		check(memcmp(a.raw.ptr, data, a.raw.len) == 0);

	/* In segments. */
	front_hello_init(&seg, cap);
	r = FRONT_HELLO_MORE;
	total = 0;
	for (off = 0; off < size && r == FRONT_HELLO_MORE; off += n) {
		n = next_seg(&seed);
		if (n > size - off)
			n = size - off;
		r = front_hello_feed(&seg, data + off, n, &used);
		check(r != FRONT_HELLO_MORE || used == n);
		check(used <= n);
		total += used;
	}
	outcome_read(&seg, cap, r, total, &b);

	check(a.r == b.r);
	if (a.r == FRONT_HELLO_REJECT)
		check(a.reason == b.reason);
	if (a.r == FRONT_HELLO_DONE) {
		check(a.consumed == b.consumed);
		check(view_eq(a.sni, b.sni));
		check(view_eq(a.alpn, b.alpn));
		check(view_eq(a.raw, b.raw));
		check(a.ech == b.ech && a.version == b.version);
		check(front_hello_records(&whole) == front_hello_records(&seg));

		/* After save() the fed buffer may change under the views. */
		check(front_hello_save(&whole) == 0);
		memset(copy, 0xa5, size);
		check(view_eq(front_hello_sni(&whole), b.sni));
		check(view_eq(front_hello_alpn(&whole), b.alpn));
		check(view_eq(front_hello_raw(&whole), b.raw));
	}
	front_hello_clear(&whole);
	front_hello_clear(&seg);
	free(copy);
	return 0;
}
