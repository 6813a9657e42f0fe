/*
 * DNS answer parser.  The packet comes from libunbound, which got it from a
 * server we do not control, so every byte is hostile: each read is checked
 * against the packet length first, compression pointers must point strictly
 * before the name segment that holds them (so a walk always terminates),
 * names are capped at 255 octets, record counts at DNS_RR_MAX and copied
 * data at the packet size.  Only records that answer the question are kept:
 * owner equal to the question name, or to the end of a CNAME chain of at
 * most DNS_CNAME_MAX hops that starts there.  A packet that breaks any of
 * this is refused as a whole with a static message; a record whose name
 * cannot be used as a host name is dropped and counted.
 */
#include "config.h"

#include <string.h>

#include "dns_parse.h"

#define DNS_HDR_LEN 12
#define DNS_CLASS_IN 1
#define DNS_FLAG_QR 0x8000
#define DNS_OPCODE(f) (((f) >> 11) & 0x0f)

/* The fixed part of a resource record, and where its pieces are. */
struct dns_rrhdr {
	unsigned char owner[DNS_WIRE_NAME_MAX];
	size_t owner_len;
	uint16_t type;
	uint16_t class;
	uint32_t ttl;
	size_t rdoff;
	size_t rdlen;
};

static uint16_t
dns_get16(const unsigned char *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t
dns_get32(const unsigned char *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
	    ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static unsigned char
dns_lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

/*
 * Read the (possibly compressed) name at *offp into wire form.  On success
 * *offp is just past the name as it sits at that place: after its root label
 * or after its first pointer.  Each pointer must point below the start of the
 * segment it ends, and into the packet body, so the walk goes strictly
 * backwards and terminates; the output is capped at 255 octets.
 */
static int
dns_name_read(const unsigned char *pkt, size_t len, size_t *offp, unsigned char *wire,
    size_t *wlenp)
{
	size_t pos = *offp, limit = *offp, out = 0, end = 0;
	int jumped = 0;

	for (;;) {
		unsigned int c;

		if (pos >= len)
			return -1;
		c = pkt[pos];
		if (c == 0) {
			if (out + 1 > DNS_WIRE_NAME_MAX)
				return -1;
			wire[out++] = 0;
			if (!jumped)
				end = pos + 1;
			break;
		}
		if ((c & 0xc0) == 0xc0) {
			size_t ptr;

			if (pos + 1 >= len)
				return -1;
			ptr = ((size_t)(c & 0x3f) << 8) | pkt[pos + 1];
			if (ptr < DNS_HDR_LEN || ptr >= limit)
				return -1;
			if (!jumped)
				end = pos + 2;
			jumped = 1;
			limit = ptr;
			pos = ptr;
			continue;
		}
		if ((c & 0xc0) != 0)
			return -1;	/* 0x40 and 0x80 label types are obsolete */
		if (c > len - pos - 1)
			return -1;
		if (out + 1 + c + 1 > DNS_WIRE_NAME_MAX)
			return -1;
		wire[out++] = (unsigned char)c;
		memcpy(wire + out, pkt + pos + 1, c);
		out += c;
		pos += 1 + c;
	}
	*offp = end;
	*wlenp = out;
	return 0;
}

/* Length octets are below 64, so folding every byte compares names label-wise. */
static int
dns_name_eq(const unsigned char *a, size_t alen, const unsigned char *b, size_t blen)
{
	size_t i;

	if (alen != blen)
		return 0;
	for (i = 0; i < alen; i++)
		if (dns_lower(a[i]) != dns_lower(b[i]))
			return 0;
	return 1;
}

/*
 * Wire to text, lower-cased, without the trailing dot; the root is ".".
 * Only letters, digits, '-' and '_' may appear in a label: anything else
 * (a dot, a space, a NUL) would change meaning once the name is text, so
 * such names are refused rather than escaped.
 */
static int
dns_name_text(const unsigned char *wire, size_t wlen, char *out, size_t size)
{
	size_t i = 0, o = 0;

	if (size < 2)
		return -1;
	if (wlen == 1 && wire[0] == 0) {
		out[0] = '.';
		out[1] = '\0';
		return 0;
	}
	while (i < wlen && wire[i] != 0) {
		size_t n = wire[i++], k;

		if (n > wlen - i)
			return -1;
		if (o != 0) {
			if (o + 1 >= size)
				return -1;
			out[o++] = '.';
		}
		for (k = 0; k < n; k++) {
			unsigned char c = dns_lower(wire[i + k]);

			if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			    c == '-' || c == '_'))
				return -1;
			if (o + 1 >= size)
				return -1;
			out[o++] = (char)c;
		}
		i += n;
	}
	out[o] = '\0';
	return 0;
}

int
dns_name_wire(const char *name, unsigned char *wire)
{
	size_t out = 0, label = 0;
	const char *p;

	if (name == NULL || name[0] == '\0')
		return -1;
	if (strcmp(name, ".") == 0) {
		wire[0] = 0;
		return 1;
	}
	wire[out++] = 0;	/* length of the first label, filled in below */
	for (p = name; *p != '\0'; p++) {
		unsigned char c = (unsigned char)*p;

		if (c == '.') {
			if (out - label - 1 == 0)
				return -1;	/* empty label */
			wire[label] = (unsigned char)(out - label - 1);
			if (p[1] == '\0')
				break;		/* one trailing dot */
			if (out + 1 >= DNS_WIRE_NAME_MAX)
				return -1;
			label = out;
			wire[out++] = 0;
			continue;
		}
		if (c <= 0x20 || c == 0x7f || c == '\\')
			return -1;
		if (out - label - 1 >= 63 || out + 1 >= DNS_WIRE_NAME_MAX)
			return -1;
		wire[out++] = c;
	}
	if (out - label - 1 == 0 && *p == '\0')
		return -1;
	wire[label] = (unsigned char)(out - label - 1);
	wire[out++] = 0;
	return (int)out;
}

static int
dns_rr_read(const unsigned char *pkt, size_t len, size_t *off, struct dns_rrhdr *h)
{
	if (dns_name_read(pkt, len, off, h->owner, &h->owner_len) == -1)
		return -1;
	if (len - *off < 10)
		return -1;
	h->type = dns_get16(pkt + *off);
	h->class = dns_get16(pkt + *off + 2);
	h->ttl = dns_get32(pkt + *off + 4);
	h->rdlen = dns_get16(pkt + *off + 8);
	*off += 10;
	if (h->rdlen > len - *off)
		return -1;
	h->rdoff = *off;
	*off += h->rdlen;
	return 0;
}

/* A name that is the whole of the rdata from off on (CNAME target, MX exchange). */
static int
dns_rdata_name(const unsigned char *pkt, size_t len, const struct dns_rrhdr *h,
    size_t off, unsigned char *wire, size_t *wlen)
{
	size_t end = off;

	if (dns_name_read(pkt, len, &end, wire, wlen) == -1)
		return -1;
	return end == h->rdoff + h->rdlen ? 0 : -1;
}

static int
dns_data_add(struct dns_answer *ans, const unsigned char *p, size_t n)
{
	if (n > DNS_DATA_MAX - ans->data_len)
		return -1;
	memcpy(ans->data + ans->data_len, p, n);
	ans->data_len += n;
	return 0;
}

/*
 * Decode one record of the asked type into the next slot.  Returns 0 when it
 * was kept or dropped (counted in skipped), -1 when its rdata is malformed.
 */
static int
dns_rr_keep(const unsigned char *pkt, size_t len, const struct dns_rrhdr *h,
    struct dns_answer *ans)
{
	const unsigned char *rd = pkt + h->rdoff;
	unsigned char wire[DNS_WIRE_NAME_MAX];
	struct dns_rr rr;
	size_t wlen, i;

	memset(&rr, 0, sizeof(rr));
	rr.type = h->type;
	rr.ttl = h->ttl;
	switch (h->type) {
	case DNS_T_A:
		if (h->rdlen != 4)
			return -1;
		memcpy(rr.addr, rd, 4);
		break;
	case DNS_T_AAAA:
		if (h->rdlen != 16)
			return -1;
		memcpy(rr.addr, rd, 16);
		break;
	case DNS_T_MX:
		if (h->rdlen < 3)
			return -1;
		rr.mx_pref = dns_get16(rd);
		if (dns_rdata_name(pkt, len, h, h->rdoff + 2, wire, &wlen) == -1)
			return -1;
		if (dns_name_text(wire, wlen, rr.name, sizeof(rr.name)) == -1) {
			ans->skipped++;
			return 0;
		}
		break;
	case DNS_T_CNAME:
	case DNS_T_PTR:
		if (dns_rdata_name(pkt, len, h, h->rdoff, wire, &wlen) == -1)
			return -1;
		if (dns_name_text(wire, wlen, rr.name, sizeof(rr.name)) == -1) {
			ans->skipped++;
			return 0;
		}
		break;
	case DNS_T_TXT:
		/* One or more <length><octets> strings, joined (RFC 7208 §3.3). */
		for (i = 0; i < h->rdlen; i += 1 + (size_t)rd[i])
			if ((size_t)rd[i] > h->rdlen - i - 1)
				return -1;
		break;
	case DNS_T_TLSA:
		if (h->rdlen < 4)
			return -1;
		rr.tlsa_usage = rd[0];
		rr.tlsa_selector = rd[1];
		rr.tlsa_mtype = rd[2];
		break;
	default:
		break;
	}
	if (ans->count >= DNS_RR_MAX) {
		ans->skipped++;
		return 0;
	}
	/* Copy data only once the record is sure to be kept. */
	if (h->type == DNS_T_TXT || h->type == DNS_T_TLSA) {
		rr.data_off = ans->data_len;
		if (h->type == DNS_T_TXT) {
			for (i = 0; i < h->rdlen; i += 1 + (size_t)rd[i])
				if (dns_data_add(ans, rd + i + 1, rd[i]) == -1)
					return -1;
		} else if (dns_data_add(ans, rd + 3, h->rdlen - 3) == -1)
			return -1;
		rr.data_len = ans->data_len - rr.data_off;
		if (dns_data_add(ans, (const unsigned char *)"", 1) == -1)
			return -1;
	}
	ans->rr[ans->count++] = rr;
	return 0;
}

/*
 * Find the CNAME whose owner is cur; on success cur becomes its target.
 * Returns 1 when one was followed, 0 when there is none, -1 on garbage.
 */
static int
dns_cname_step(const unsigned char *pkt, size_t len, size_t an_off, unsigned int ancount,
    unsigned char *cur, size_t *curlen)
{
	struct dns_rrhdr h;
	size_t off = an_off, wlen;
	unsigned int i;

	for (i = 0; i < ancount; i++) {
		if (dns_rr_read(pkt, len, &off, &h) == -1)
			return -1;
		if (h.type != DNS_T_CNAME || h.class != DNS_CLASS_IN ||
		    !dns_name_eq(h.owner, h.owner_len, cur, *curlen))
			continue;
		if (dns_rdata_name(pkt, len, &h, h.rdoff, cur, &wlen) == -1)
			return -1;
		*curlen = wlen;
		return 1;
	}
	return 0;
}

int
dns_parse_answer(const unsigned char *pkt, size_t len, const char *qname,
    uint16_t qtype, struct dns_answer *ans, const char **err)
{
	unsigned char qwire[DNS_WIRE_NAME_MAX], want[DNS_WIRE_NAME_MAX];
	unsigned char cur[DNS_WIRE_NAME_MAX];
	size_t off, an_off, qwlen, curlen;
	unsigned int qdcount, ancount, i;
	uint16_t flags, qt, qc;
	struct dns_rrhdr h;
	int r, wantlen;

	ans->rcode = -1;
	ans->qtype = 0;
	ans->qname[0] = '\0';
	ans->canon[0] = '\0';
	ans->ncname = 0;
	ans->count = 0;
	ans->skipped = 0;
	ans->data_len = 0;

	if (pkt == NULL || len < DNS_HDR_LEN) {
		*err = "short header";
		return -1;
	}
	if (len > DNS_PACKET_MAX) {
		*err = "packet too long";
		return -1;
	}
	flags = dns_get16(pkt + 2);
	if (!(flags & DNS_FLAG_QR) || DNS_OPCODE(flags) != 0) {
		*err = "not a query response";
		return -1;
	}
	qdcount = dns_get16(pkt + 4);
	ancount = dns_get16(pkt + 6);
	if (qdcount != 1) {
		*err = "question count is not 1";
		return -1;
	}

	off = DNS_HDR_LEN;
	if (dns_name_read(pkt, len, &off, qwire, &qwlen) == -1 || len - off < 4) {
		*err = "malformed question";
		return -1;
	}
	qt = dns_get16(pkt + off);
	qc = dns_get16(pkt + off + 2);
	off += 4;
	if (qc != DNS_CLASS_IN) {
		*err = "question class is not IN";
		return -1;
	}
	if (qname != NULL) {
		wantlen = dns_name_wire(qname, want);
		if (wantlen == -1 || !dns_name_eq(want, (size_t)wantlen, qwire, qwlen)) {
			*err = "answer is for another name";
			return -1;
		}
	}
	if (qtype != 0 && qt != qtype) {
		*err = "answer is for another type";
		return -1;
	}
	ans->rcode = flags & 0x0f;
	ans->qtype = qt;
	if (dns_name_text(qwire, qwlen, ans->qname, sizeof(ans->qname)) == -1)
		ans->qname[0] = '\0';

	/* The whole answer section must be well formed before any of it is used. */
	an_off = off;
	for (i = 0; i < ancount; i++) {
		if (dns_rr_read(pkt, len, &off, &h) == -1) {
			*err = "truncated or malformed answer record";
			return -1;
		}
	}

	memcpy(cur, qwire, qwlen);
	curlen = qwlen;
	if (qt != DNS_T_CNAME) {
		for (;;) {
			r = dns_cname_step(pkt, len, an_off, ancount, cur, &curlen);
			if (r == -1) {
				*err = "malformed CNAME record";
				return -1;
			}
			if (r == 0)
				break;
			if (++ans->ncname > DNS_CNAME_MAX) {
				*err = "CNAME chain too long or looping";
				return -1;
			}
		}
	}
	if (dns_name_text(cur, curlen, ans->canon, sizeof(ans->canon)) == -1)
		ans->canon[0] = '\0';

	off = an_off;
	for (i = 0; i < ancount; i++) {
		if (dns_rr_read(pkt, len, &off, &h) == -1) {
			*err = "truncated or malformed answer record";
			return -1;
		}
		if (h.type != qt || h.class != DNS_CLASS_IN ||
		    !dns_name_eq(h.owner, h.owner_len, cur, curlen))
			continue;
		if (dns_rr_keep(pkt, len, &h, ans) == -1) {
			*err = "malformed record data";
			return -1;
		}
	}
	return 0;
}

enum dns_status
dns_answer_status(const struct dns_answer *ans)
{
	switch (ans->rcode) {
	case DNS_RCODE_NOERROR:
		if (ans->count > 0)
			return DNS_OK;
		/*
		 * Records exist but none can be used: not NODATA, which would
		 * make a missing MX fall back to the implicit MX.
		 */
		return ans->skipped > 0 ? DNS_ERROR : DNS_NODATA;
	case DNS_RCODE_NXDOMAIN:
		return DNS_NXDOMAIN;
	default:
		return DNS_TEMPFAIL;
	}
}

const unsigned char *
dns_rr_data(const struct dns_answer *ans, const struct dns_rr *rr)
{
	return ans->data + rr->data_off;
}

const char *
dns_status_str(enum dns_status status)
{
	switch (status) {
	case DNS_OK:
		return "ok";
	case DNS_NXDOMAIN:
		return "nxdomain";
	case DNS_NODATA:
		return "nodata";
	case DNS_TEMPFAIL:
		return "tempfail";
	case DNS_ERROR:
		return "error";
	}
	return "unknown";
}
