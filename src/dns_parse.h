/*
 * DNS answers in wire format: a bounds-checked parser for the records the
 * relay and the front need (MX, A, AAAA, TXT, TLSA, CNAME chains).  Pure
 * code: no sockets, no allocation, no resolver.  The caller owns the
 * struct dns_answer the records are written into.
 */
#ifndef MXEDGE_DNS_PARSE_H
#define MXEDGE_DNS_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Record types (protocol numbers, RFC 1035, 3596, 6698). */
#define DNS_T_A		1
#define DNS_T_CNAME	5
#define DNS_T_PTR	12
#define DNS_T_MX	15
#define DNS_T_TXT	16
#define DNS_T_AAAA	28
#define DNS_T_TLSA	52

#define DNS_RCODE_NOERROR	0
#define DNS_RCODE_SERVFAIL	2
#define DNS_RCODE_NXDOMAIN	3

#define DNS_WIRE_NAME_MAX 255	/* octets of a name in wire form, root label included */
#define DNS_NAME_BUF 256	/* a name in text form (at most 253 octets) with its NUL */
#define DNS_RR_MAX 64		/* records kept per answer; the rest are counted in skipped */
#define DNS_CNAME_MAX 8		/* CNAME hops followed inside one answer */
#define DNS_PACKET_MAX 65535
/* TXT strings and TLSA data are copied out of the packet, never longer than it. */
#define DNS_DATA_MAX (DNS_PACKET_MAX + DNS_RR_MAX)

enum dns_status {
	DNS_OK = 0,	/* records of the asked type */
	DNS_NXDOMAIN,	/* the name does not exist */
	DNS_NODATA,	/* the name exists, no records of that type */
	DNS_TEMPFAIL,	/* server failure, refusal, timeout: try again later */
	DNS_ERROR,	/* malformed answer, bad name, local failure */
};

struct dns_rr {
	uint16_t type;
	uint32_t ttl;
	uint16_t mx_pref;		/* MX */
	char name[DNS_NAME_BUF];	/* MX exchange or PTR target, lower-cased; "." for null MX */
	unsigned char addr[16];		/* A: the first 4 octets; AAAA: all 16 */
	uint8_t tlsa_usage;		/* TLSA */
	uint8_t tlsa_selector;
	uint8_t tlsa_mtype;
	size_t data_off;		/* TXT text or TLSA association data, in */
	size_t data_len;		/* dns_answer.data, NUL-terminated there */
};

struct dns_answer {
	int rcode;			/* from the header */
	uint16_t qtype;
	char qname[DNS_NAME_BUF];	/* the question, lower-cased */
	char canon[DNS_NAME_BUF];	/* owner of the records after CNAMEs; "" if unprintable */
	unsigned int ncname;		/* CNAME hops followed */
	size_t count;
	size_t skipped;			/* records of the type dropped: unusable name, over DNS_RR_MAX */
	struct dns_rr rr[DNS_RR_MAX];
	size_t data_len;
	unsigned char data[DNS_DATA_MAX];
};

/*
 * Parse a response.  The question must be one entry of class IN; when qname
 * is not NULL it must equal the question (case-insensitively, one trailing
 * dot ignored), and when qtype is not 0 it must equal the question type.
 * Records are kept when their class is IN, their type is the question type,
 * and their owner is the question name or the end of the CNAME chain that
 * starts there.  Everything else in the packet is ignored; authority and
 * additional sections are not read.  Returns 0, or -1 with *err a static
 * message when the packet is truncated, malformed or not the answer to the
 * question.
 */
int dns_parse_answer(const unsigned char *pkt, size_t len, const char *qname,
    uint16_t qtype, struct dns_answer *ans, const char **err);

/* OK/NODATA from NOERROR, NXDOMAIN, TEMPFAIL for the other rcodes. */
enum dns_status dns_answer_status(const struct dns_answer *ans);

/* The TXT text or TLSA data of a record (NUL-terminated; may contain NULs). */
const unsigned char *dns_rr_data(const struct dns_answer *ans, const struct dns_rr *rr);

/*
 * A name in text form to wire form: labels of 1..63 octets, at most 255
 * octets in all, one trailing dot allowed, "." is the root.  Control bytes,
 * space and backslash are refused (we never need escapes).  wire must hold
 * DNS_WIRE_NAME_MAX octets.  Returns the wire length, or -1.
 */
int dns_name_wire(const char *name, unsigned char *wire);

const char *dns_status_str(enum dns_status status);

#endif
