/*
 * Fuzz target for the DNS answer parser and what consumes its MX records.
 * The input is a response packet as a hostile server would send it; it is
 * parsed without an expected question, then as the answer to "mxr.test" of
 * each type we ask for, and any MX records go through next-hop selection.
 * The output bounds are checked after every parse.
 *
 *   clang -fsanitize=fuzzer,address,undefined -Isrc ... fuzz_dns_answer.c
 *   (or with tests/fuzz/standalone.c and any compiler: runs the files in argv)
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dns_parse.h"
#include "relay_mx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct dns_answer ans;
static struct relay_mx_plan plan;

static uint32_t
fuzz_rng(void *arg)
{
	return 7;
}

static void
fuzz_check(void)
{
	size_t i;

	if (ans.count > DNS_RR_MAX || ans.data_len > DNS_DATA_MAX)
		abort();
	if (memchr(ans.qname, '\0', sizeof(ans.qname)) == NULL ||
	    memchr(ans.canon, '\0', sizeof(ans.canon)) == NULL)
		abort();
	for (i = 0; i < ans.count; i++) {
		const struct dns_rr *rr = &ans.rr[i];

		if (memchr(rr->name, '\0', sizeof(rr->name)) == NULL)
			abort();
		if (rr->data_len > ans.data_len || rr->data_off > ans.data_len - rr->data_len)
			abort();
	}
}

static void
fuzz_route(void)
{
	struct relay_mx_record recs[DNS_RR_MAX];
	size_t n;

	n = relay_mx_records(&ans, recs, DNS_RR_MAX);
	relay_mx_plan_mx(&plan, "mxr.test", dns_answer_status(&ans), recs, n,
	    "mx2.edge.test", fuzz_rng, NULL);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint16_t types[] = {
		DNS_T_MX, DNS_T_A, DNS_T_AAAA, DNS_T_TXT, DNS_T_TLSA, DNS_T_CNAME
	};
	unsigned char wire[DNS_WIRE_NAME_MAX];
	char name[300];
	const char *err;
	size_t i;

	if (dns_parse_answer(data, size, NULL, 0, &ans, &err) == 0) {
		fuzz_check();
		(void)dns_answer_status(&ans);
		if (ans.qtype == DNS_T_MX)
			fuzz_route();
	}
	for (i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		if (dns_parse_answer(data, size, "mxr.test", types[i], &ans, &err) == 0)
			fuzz_check();

	/* The same bytes as a name in text form. */
	i = size < sizeof(name) - 1 ? size : sizeof(name) - 1;
	memcpy(name, data, i);
	name[i] = '\0';
	(void)dns_name_wire(name, wire);
	return 0;
}
