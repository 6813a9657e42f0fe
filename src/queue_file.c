/*
 * Queue file and delivery journal encoding (the format is described in
 * queue_file.h).  The decoder trusts nothing it reads: a file that crashed
 * half-written, a flipped bit, or a file somebody crafted must all come out
 * as TORN or CORRUPT, never as a message, so the END record and checksum are
 * verified before any record is interpreted, every length is checked before
 * it is used, and every string is checked for control octets before it is
 * copied into a fixed buffer.  The encoder refuses the same bad values, so
 * what we write is always what we can read back.  No allocation except the
 * recipient array; no I/O except the pread() of queue_file_read_fd().
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "queue_file.h"

/* Message file record types.  Stored on disk: never renumber. */
enum {
	QF_NONE = 0x00,		/* never written: a zeroed block must not parse */
	QF_ID = 0x01,
	QF_ARRIVAL = 0x02,
	QF_NEXT_ATTEMPT = 0x03,
	QF_SENDER = 0x04,
	QF_CLIENT_ADDR = 0x05,
	QF_CLIENT_NAME = 0x06,
	QF_HELO = 0x07,
	QF_TLS_VERSION = 0x08,
	QF_TLS_CIPHER = 0x09,
	QF_SMTPUTF8 = 0x0a,
	QF_BODYTYPE = 0x0b,
	QF_RET = 0x0c,
	QF_ENVID = 0x0d,
	QF_SIZE = 0x0e,
	QF_RCPT = 0x10,
	QF_BODY = 0x7e,
	QF_END = 0x7f,
	/* Types from here up may be skipped by readers that do not know them. */
	QF_OPTIONAL = 0x80,
};

/* Sub-records inside a QF_RCPT value. */
enum {
	QF_RCPT_NONE = 0x00,
	QF_RCPT_ADDR = 0x01,
	QF_RCPT_NOTIFY = 0x02,
	QF_RCPT_ORCPT = 0x03,
	QF_RCPT_STATE = 0x04,
	QF_RCPT_UPDATED = 0x05,
	QF_RCPT_REPLY = 0x06,
};

#define QF_MAGIC "MXQF"
#define QJ_MAGIC "MXQS"
#define QF_HDR_LEN 8		/* magic + version */
#define QF_REC_HDR 5		/* type + length */
#define QF_END_VLEN 20		/* body length, END offset, CRC */
#define QF_END_LEN (QF_REC_HDR + QF_END_VLEN)
#define QF_BODY_STREAM 0xffffffffu
#define QJ_VALUE_MAX 1024	/* every journal value is far smaller */
#define QF_NOTIFY_ALL (QUEUE_NOTIFY_NEVER | QUEUE_NOTIFY_SUCCESS | QUEUE_NOTIFY_FAILURE | \
	QUEUE_NOTIFY_DELAY)

enum {
	QFW_NEW = 0,
	QFW_BODY,
	QFW_DONE,
};

static const uint32_t crc_table[256] = {
	0x00000000u, 0x77073096u, 0xee0e612cu, 0x990951bau,
	0x076dc419u, 0x706af48fu, 0xe963a535u, 0x9e6495a3u,
	0x0edb8832u, 0x79dcb8a4u, 0xe0d5e91eu, 0x97d2d988u,
	0x09b64c2bu, 0x7eb17cbdu, 0xe7b82d07u, 0x90bf1d91u,
	0x1db71064u, 0x6ab020f2u, 0xf3b97148u, 0x84be41deu,
	0x1adad47du, 0x6ddde4ebu, 0xf4d4b551u, 0x83d385c7u,
	0x136c9856u, 0x646ba8c0u, 0xfd62f97au, 0x8a65c9ecu,
	0x14015c4fu, 0x63066cd9u, 0xfa0f3d63u, 0x8d080df5u,
	0x3b6e20c8u, 0x4c69105eu, 0xd56041e4u, 0xa2677172u,
	0x3c03e4d1u, 0x4b04d447u, 0xd20d85fdu, 0xa50ab56bu,
	0x35b5a8fau, 0x42b2986cu, 0xdbbbc9d6u, 0xacbcf940u,
	0x32d86ce3u, 0x45df5c75u, 0xdcd60dcfu, 0xabd13d59u,
	0x26d930acu, 0x51de003au, 0xc8d75180u, 0xbfd06116u,
	0x21b4f4b5u, 0x56b3c423u, 0xcfba9599u, 0xb8bda50fu,
	0x2802b89eu, 0x5f058808u, 0xc60cd9b2u, 0xb10be924u,
	0x2f6f7c87u, 0x58684c11u, 0xc1611dabu, 0xb6662d3du,
	0x76dc4190u, 0x01db7106u, 0x98d220bcu, 0xefd5102au,
	0x71b18589u, 0x06b6b51fu, 0x9fbfe4a5u, 0xe8b8d433u,
	0x7807c9a2u, 0x0f00f934u, 0x9609a88eu, 0xe10e9818u,
	0x7f6a0dbbu, 0x086d3d2du, 0x91646c97u, 0xe6635c01u,
	0x6b6b51f4u, 0x1c6c6162u, 0x856530d8u, 0xf262004eu,
	0x6c0695edu, 0x1b01a57bu, 0x8208f4c1u, 0xf50fc457u,
	0x65b0d9c6u, 0x12b7e950u, 0x8bbeb8eau, 0xfcb9887cu,
	0x62dd1ddfu, 0x15da2d49u, 0x8cd37cf3u, 0xfbd44c65u,
	0x4db26158u, 0x3ab551ceu, 0xa3bc0074u, 0xd4bb30e2u,
	0x4adfa541u, 0x3dd895d7u, 0xa4d1c46du, 0xd3d6f4fbu,
	0x4369e96au, 0x346ed9fcu, 0xad678846u, 0xda60b8d0u,
	0x44042d73u, 0x33031de5u, 0xaa0a4c5fu, 0xdd0d7cc9u,
	0x5005713cu, 0x270241aau, 0xbe0b1010u, 0xc90c2086u,
	0x5768b525u, 0x206f85b3u, 0xb966d409u, 0xce61e49fu,
	0x5edef90eu, 0x29d9c998u, 0xb0d09822u, 0xc7d7a8b4u,
	0x59b33d17u, 0x2eb40d81u, 0xb7bd5c3bu, 0xc0ba6cadu,
	0xedb88320u, 0x9abfb3b6u, 0x03b6e20cu, 0x74b1d29au,
	0xead54739u, 0x9dd277afu, 0x04db2615u, 0x73dc1683u,
	0xe3630b12u, 0x94643b84u, 0x0d6d6a3eu, 0x7a6a5aa8u,
	0xe40ecf0bu, 0x9309ff9du, 0x0a00ae27u, 0x7d079eb1u,
	0xf00f9344u, 0x8708a3d2u, 0x1e01f268u, 0x6906c2feu,
	0xf762575du, 0x806567cbu, 0x196c3671u, 0x6e6b06e7u,
	0xfed41b76u, 0x89d32be0u, 0x10da7a5au, 0x67dd4accu,
	0xf9b9df6fu, 0x8ebeeff9u, 0x17b7be43u, 0x60b08ed5u,
	0xd6d6a3e8u, 0xa1d1937eu, 0x38d8c2c4u, 0x4fdff252u,
	0xd1bb67f1u, 0xa6bc5767u, 0x3fb506ddu, 0x48b2364bu,
	0xd80d2bdau, 0xaf0a1b4cu, 0x36034af6u, 0x41047a60u,
	0xdf60efc3u, 0xa867df55u, 0x316e8eefu, 0x4669be79u,
	0xcb61b38cu, 0xbc66831au, 0x256fd2a0u, 0x5268e236u,
	0xcc0c7795u, 0xbb0b4703u, 0x220216b9u, 0x5505262fu,
	0xc5ba3bbeu, 0xb2bd0b28u, 0x2bb45a92u, 0x5cb36a04u,
	0xc2d7ffa7u, 0xb5d0cf31u, 0x2cd99e8bu, 0x5bdeae1du,
	0x9b64c2b0u, 0xec63f226u, 0x756aa39cu, 0x026d930au,
	0x9c0906a9u, 0xeb0e363fu, 0x72076785u, 0x05005713u,
	0x95bf4a82u, 0xe2b87a14u, 0x7bb12baeu, 0x0cb61b38u,
	0x92d28e9bu, 0xe5d5be0du, 0x7cdcefb7u, 0x0bdbdf21u,
	0x86d3d2d4u, 0xf1d4e242u, 0x68ddb3f8u, 0x1fda836eu,
	0x81be16cdu, 0xf6b9265bu, 0x6fb077e1u, 0x18b74777u,
	0x88085ae6u, 0xff0f6a70u, 0x66063bcau, 0x11010b5cu,
	0x8f659effu, 0xf862ae69u, 0x616bffd3u, 0x166ccf45u,
	0xa00ae278u, 0xd70dd2eeu, 0x4e048354u, 0x3903b3c2u,
	0xa7672661u, 0xd06016f7u, 0x4969474du, 0x3e6e77dbu,
	0xaed16a4au, 0xd9d65adcu, 0x40df0b66u, 0x37d83bf0u,
	0xa9bcae53u, 0xdebb9ec5u, 0x47b2cf7fu, 0x30b5ffe9u,
	0xbdbdf21cu, 0xcabac28au, 0x53b39330u, 0x24b4a3a6u,
	0xbad03605u, 0xcdd70693u, 0x54de5729u, 0x23d967bfu,
	0xb3667a2eu, 0xc4614ab8u, 0x5d681b02u, 0x2a6f2b94u,
	0xb40bbe37u, 0xc30c8ea1u, 0x5a05df1bu, 0x2d02ef8du,
};

uint32_t
queue_crc32(uint32_t crc, const void *p, size_t len)
{
	const unsigned char *s = p;
	size_t i;

	crc = ~crc;
	for (i = 0; i < len; i++)
		crc = crc_table[(crc ^ s[i]) & 0xff] ^ (crc >> 8);
	return ~crc;
}

static void
be32_put(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static void
be64_put(unsigned char *p, uint64_t v)
{
	be32_put(p, (uint32_t)(v >> 32));
	be32_put(p + 4, (uint32_t)v);
}

static uint32_t
be32_get(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t
be64_get(const unsigned char *p)
{
	return (uint64_t)be32_get(p) << 32 | be32_get(p + 4);
}

/* Length of s if it fits in max octets and holds no control octet, else -1. */
static long
str_check(const char *s, size_t max)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i;

	for (i = 0; i <= max; i++) {
		if (u[i] == '\0')
			return (long)i;
		if (u[i] < 0x20 || u[i] == 0x7f)
			return -1;
	}
	return -1;
}

/* Copy a record value into dst[max + 1], refusing control octets and NUL. */
static int
str_get(const unsigned char *v, uint32_t n, char *dst, size_t max)
{
	uint32_t i;

	if (n > max)
		return -1;
	for (i = 0; i < n; i++)
		if (v[i] < 0x20 || v[i] == 0x7f)
			return -1;
	memcpy(dst, v, n);
	dst[n] = '\0';
	return 0;
}

bool
queue_id_valid(const char *s)
{
	size_t i;

	for (i = 0; i <= QUEUE_ID_MAX; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '\0')
			return i > 0;
		if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')))
			return false;
	}
	return false;
}

void
queue_envelope_init(struct queue_envelope *env)
{
	memset(env, 0, sizeof(*env));
}

void
queue_envelope_clear(struct queue_envelope *env)
{
	free(env->rcpts);
	queue_envelope_init(env);
}

struct queue_rcpt *
queue_envelope_add_rcpt(struct queue_envelope *env)
{
	struct queue_rcpt *r;

	if (env->nrcpts >= QUEUE_RCPT_MAX) {
		errno = E2BIG;
		return NULL;
	}
	if (env->nrcpts >= env->rcpts_cap) {
		size_t cap = env->rcpts_cap < 8 ? 8 : env->rcpts_cap * 2;

		if (cap > QUEUE_RCPT_MAX)
			cap = QUEUE_RCPT_MAX;
		if ((r = realloc(env->rcpts, cap * sizeof(*r))) == NULL)
			return NULL;
		env->rcpts = r;
		env->rcpts_cap = cap;
	}
	r = &env->rcpts[env->nrcpts++];
	memset(r, 0, sizeof(*r));
	return r;
}

/* Encoder --------------------------------------------------------------- */

static int
rec_put(struct mx_buf *b, unsigned int type, const void *v, size_t n)
{
	unsigned char h[QF_REC_HDR];

	if (n >= QF_BODY_STREAM) {
		errno = EMSGSIZE;
		return -1;
	}
	h[0] = (unsigned char)type;
	be32_put(h + 1, (uint32_t)n);
	if (mx_buf_add(b, h, sizeof(h)) == -1 || mx_buf_add(b, v, n) == -1)
		return -1;
	return 0;
}

static int
rec_put_str(struct mx_buf *b, unsigned int type, const char *s)
{
	return rec_put(b, type, s, strlen(s));
}

/* Optional strings are simply left out when empty. */
static int
rec_put_opt(struct mx_buf *b, unsigned int type, const char *s)
{
	return s[0] == '\0' ? 0 : rec_put_str(b, type, s);
}

static int
rec_put_u64(struct mx_buf *b, unsigned int type, uint64_t v)
{
	unsigned char x[8];

	be64_put(x, v);
	return rec_put(b, type, x, sizeof(x));
}

static int
rec_put_u8(struct mx_buf *b, unsigned int type, unsigned int v)
{
	unsigned char x = (unsigned char)v;

	return rec_put(b, type, &x, 1);
}

static bool
rcpt_valid(const struct queue_rcpt *r)
{
	return str_check(r->addr, QUEUE_ADDR_MAX) > 0 &&
	    str_check(r->orcpt, QUEUE_ORCPT_MAX) >= 0 &&
	    str_check(r->reply, QUEUE_REPLY_MAX) >= 0 &&
	    (r->notify & ~QF_NOTIFY_ALL) == 0 &&
	    r->state >= QUEUE_RCPT_PENDING && r->state <= QUEUE_RCPT_DEFERRED;
}

static bool
envelope_valid(const struct queue_envelope *env)
{
	size_t i;

	if (!queue_id_valid(env->id) ||
	    str_check(env->sender, QUEUE_ADDR_MAX) < 0 ||
	    str_check(env->client_addr, QUEUE_CLIENT_ADDR_MAX) < 0 ||
	    str_check(env->client_name, QUEUE_NAME_MAX) < 0 ||
	    str_check(env->helo, QUEUE_HELO_MAX) < 0 ||
	    str_check(env->tls_version, QUEUE_TLS_MAX) < 0 ||
	    str_check(env->tls_cipher, QUEUE_TLS_MAX) < 0 ||
	    str_check(env->envid, QUEUE_ENVID_MAX) < 0 ||
	    env->body < QUEUE_BODY_NONE || env->body > QUEUE_BODY_8BITMIME ||
	    env->ret < QUEUE_RET_NONE || env->ret > QUEUE_RET_HDRS ||
	    env->nrcpts == 0 || env->nrcpts > QUEUE_RCPT_MAX || env->rcpts == NULL)
		return false;
	for (i = 0; i < env->nrcpts; i++)
		if (!rcpt_valid(&env->rcpts[i]))
			return false;
	return true;
}

static int
rcpt_put(struct mx_buf *b, const struct queue_rcpt *r)
{
	size_t vlen;

	/* The value is a run of sub-records; its length is known up front. */
	vlen = QF_REC_HDR + strlen(r->addr) + QF_REC_HDR + 1 + QF_REC_HDR + 1;
	if (r->orcpt[0] != '\0')
		vlen += QF_REC_HDR + strlen(r->orcpt);
	if (r->updated != 0)
		vlen += QF_REC_HDR + 8;
	if (r->reply[0] != '\0')
		vlen += QF_REC_HDR + strlen(r->reply);
	if (rec_put(b, QF_RCPT, NULL, 0) == -1)
		return -1;
	be32_put(b->data + b->len - 4, (uint32_t)vlen);
	if (rec_put_str(b, QF_RCPT_ADDR, r->addr) == -1 ||
	    rec_put_u8(b, QF_RCPT_NOTIFY, r->notify) == -1 ||
	    rec_put_u8(b, QF_RCPT_STATE, r->state) == -1 ||
	    rec_put_opt(b, QF_RCPT_ORCPT, r->orcpt) == -1 ||
	    (r->updated != 0 && rec_put_u64(b, QF_RCPT_UPDATED, (uint64_t)r->updated) == -1) ||
	    rec_put_opt(b, QF_RCPT_REPLY, r->reply) == -1)
		return -1;
	return 0;
}

int
queue_file_begin(struct queue_file_writer *w, const struct queue_envelope *env,
    struct mx_buf *out)
{
	unsigned char hdr[QF_HDR_LEN + QF_REC_HDR];
	size_t start = out->len, i;

	memset(w, 0, sizeof(*w));
	if (!envelope_valid(env)) {
		errno = EINVAL;
		return -1;
	}
	memcpy(hdr, QF_MAGIC, 4);
	be32_put(hdr + 4, QUEUE_FILE_FORMAT);
	if (mx_buf_add(out, hdr, QF_HDR_LEN) == -1 ||
	    rec_put_str(out, QF_ID, env->id) == -1 ||
	    rec_put_u64(out, QF_ARRIVAL, (uint64_t)env->arrival) == -1 ||
	    rec_put_u64(out, QF_NEXT_ATTEMPT, (uint64_t)env->next_attempt) == -1 ||
	    rec_put_str(out, QF_SENDER, env->sender) == -1 ||
	    rec_put_opt(out, QF_CLIENT_ADDR, env->client_addr) == -1 ||
	    rec_put_opt(out, QF_CLIENT_NAME, env->client_name) == -1 ||
	    rec_put_opt(out, QF_HELO, env->helo) == -1 ||
	    rec_put_opt(out, QF_TLS_VERSION, env->tls_version) == -1 ||
	    rec_put_opt(out, QF_TLS_CIPHER, env->tls_cipher) == -1 ||
	    (env->smtputf8 && rec_put(out, QF_SMTPUTF8, NULL, 0) == -1) ||
	    (env->body != QUEUE_BODY_NONE && rec_put_u8(out, QF_BODYTYPE, env->body) == -1) ||
	    (env->ret != QUEUE_RET_NONE && rec_put_u8(out, QF_RET, env->ret) == -1) ||
	    rec_put_opt(out, QF_ENVID, env->envid) == -1 ||
	    (env->size != 0 && rec_put_u64(out, QF_SIZE, env->size) == -1))
		goto fail;
	for (i = 0; i < env->nrcpts; i++)
		if (rcpt_put(out, &env->rcpts[i]) == -1)
			goto fail;
	hdr[0] = QF_BODY;
	be32_put(hdr + 1, QF_BODY_STREAM);
	if (mx_buf_add(out, hdr, QF_REC_HDR) == -1)
		goto fail;
	w->crc = queue_crc32(0, out->data + start, out->len - start);
	w->len = out->len - start;
	w->state = QFW_BODY;
	return 0;
fail:
	out->len = start;
	return -1;
}

void
queue_file_body(struct queue_file_writer *w, const void *p, size_t len)
{
	w->crc = queue_crc32(w->crc, p, len);
	w->len += len;
	w->body_len += len;
}

int
queue_file_finish(struct queue_file_writer *w, struct mx_buf *out)
{
	unsigned char end[QF_END_LEN];

	if (w->state != QFW_BODY) {
		errno = EINVAL;
		return -1;
	}
	end[0] = QF_END;
	be32_put(end + 1, QF_END_VLEN);
	be64_put(end + 5, w->body_len);
	be64_put(end + 13, w->len);
	be32_put(end + 21, w->crc);
	if (mx_buf_add(out, end, sizeof(end)) == -1)
		return -1;
	w->state = QFW_DONE;
	return 0;
}

int
queue_file_encode(const struct queue_envelope *env, const void *body, size_t len,
    struct mx_buf *out)
{
	struct queue_file_writer w;
	size_t start = out->len;

	if (queue_file_begin(&w, env, out) == -1)
		return -1;
	queue_file_body(&w, body, len);
	if (mx_buf_add(out, body, len) == -1 || queue_file_finish(&w, out) == -1) {
		out->len = start;
		return -1;
	}
	return 0;
}

/* Decoder --------------------------------------------------------------- */

/* Magic and version, from the first min(avail, 8) octets of a file of flen octets. */
static enum queue_file_status
hdr_check(const unsigned char *p, size_t avail, uint64_t flen, const char *magic)
{
	size_t n = avail < 4 ? avail : 4;

	if (n > 0 && memcmp(p, magic, n) != 0)
		return QUEUE_FILE_BAD_MAGIC;
	if (flen < QF_HDR_LEN || avail < QF_HDR_LEN)
		return QUEUE_FILE_TORN;
	if (be32_get(p + 4) != QUEUE_FILE_FORMAT)
		return QUEUE_FILE_VERSION;
	return QUEUE_FILE_OK;
}

/*
 * The END record (the last QF_END_LEN octets of a file of flen octets):
 * anything that is not a well-formed END at exactly that offset means the
 * write never finished.  Sets the body location and the expected CRC.
 */
static enum queue_file_status
end_check(const unsigned char *e, uint64_t flen, struct queue_file_info *info, uint32_t *crc)
{
	uint64_t body_len, end_off;

	if (flen < QF_HDR_LEN + QF_REC_HDR + QF_END_LEN)
		return QUEUE_FILE_TORN;
	body_len = be64_get(e + 5);
	end_off = be64_get(e + 13);
	if (e[0] != QF_END || be32_get(e + 1) != QF_END_VLEN || end_off != flen - QF_END_LEN ||
	    body_len > end_off - QF_HDR_LEN - QF_REC_HDR)
		return QUEUE_FILE_TORN;
	info->file_len = flen;
	info->body_len = body_len;
	info->body_off = end_off - body_len;
	*crc = be32_get(e + 21);
	return QUEUE_FILE_OK;
}

static int
get_u8(const unsigned char *v, uint32_t n, unsigned int max, unsigned int *out)
{
	if (n != 1 || v[0] > max)
		return -1;
	*out = v[0];
	return 0;
}

static int
get_i64(const unsigned char *v, uint32_t n, int64_t *out)
{
	if (n != 8)
		return -1;
	*out = (int64_t)be64_get(v);
	return 0;
}

static int
rcpt_get(const unsigned char *v, uint32_t vlen, struct queue_rcpt *r)
{
	unsigned int seen = 0, x = 0;
	uint32_t off = 0;

	while (off < vlen) {
		unsigned int type;
		uint32_t n;
		const unsigned char *val;
		int rc = 0;

		if (vlen - off < QF_REC_HDR)
			return -1;
		type = v[off];
		n = be32_get(v + off + 1);
		if (n > vlen - off - QF_REC_HDR)
			return -1;
		val = v + off + QF_REC_HDR;
		off += QF_REC_HDR + n;
		if (type < 32) {
			if (seen & (1u << type))
				return -1;
			seen |= 1u << type;
		}
		switch (type) {
		case QF_RCPT_ADDR:
			rc = n == 0 ? -1 : str_get(val, n, r->addr, QUEUE_ADDR_MAX);
			break;
		case QF_RCPT_NOTIFY:
			rc = get_u8(val, n, QF_NOTIFY_ALL, &r->notify);
			break;
		case QF_RCPT_ORCPT:
			rc = str_get(val, n, r->orcpt, QUEUE_ORCPT_MAX);
			break;
		case QF_RCPT_STATE:
			rc = get_u8(val, n, QUEUE_RCPT_DEFERRED, &x);
			r->state = (enum queue_rcpt_state)x;
			break;
		case QF_RCPT_UPDATED:
			rc = get_i64(val, n, &r->updated);
			break;
		case QF_RCPT_REPLY:
			rc = str_get(val, n, r->reply, QUEUE_REPLY_MAX);
			break;
		default:
			if (type < QF_OPTIONAL)
				return -1;
			break;
		}
		if (rc == -1)
			return -1;
	}
	return (seen & (1u << QF_RCPT_ADDR)) ? 0 : -1;
}

/*
 * The envelope records in p[QF_HDR_LEN, end), end being the offset of the
 * BODY record.  Only called once the checksum matched, so a failure here is
 * a writer bug or a crafted file: CORRUPT.
 */
static enum queue_file_status
envelope_get(const unsigned char *p, size_t end, struct queue_envelope *env)
{
	uint64_t seen = 0;
	size_t off, n = 0;
	unsigned int x = 0;

	for (off = QF_HDR_LEN; off < end; ) {
		uint32_t vlen;

		if (end - off < QF_REC_HDR)
			return QUEUE_FILE_CORRUPT;
		vlen = be32_get(p + off + 1);
		if (vlen > end - off - QF_REC_HDR)
			return QUEUE_FILE_CORRUPT;
		if (p[off] == QF_RCPT)
			n++;
		off += QF_REC_HDR + vlen;
	}
	if (n == 0 || n > QUEUE_RCPT_MAX)
		return QUEUE_FILE_CORRUPT;
	env->rcpts = calloc(n, sizeof(*env->rcpts));
	if (env->rcpts == NULL)
		return QUEUE_FILE_NOMEM;
	env->rcpts_cap = n;

	for (off = QF_HDR_LEN; off < end; ) {
		unsigned int type = p[off];
		uint32_t vlen = be32_get(p + off + 1);
		const unsigned char *v = p + off + QF_REC_HDR;
		int rc = 0;

		off += QF_REC_HDR + vlen;
		if (type != QF_RCPT && type < 64) {
			if (seen & ((uint64_t)1 << type))
				return QUEUE_FILE_CORRUPT;
			seen |= (uint64_t)1 << type;
		}
		switch (type) {
		case QF_ID:
			rc = str_get(v, vlen, env->id, QUEUE_ID_MAX);
			if (rc == 0 && !queue_id_valid(env->id))
				rc = -1;
			break;
		case QF_ARRIVAL:
			rc = get_i64(v, vlen, &env->arrival);
			break;
		case QF_NEXT_ATTEMPT:
			rc = get_i64(v, vlen, &env->next_attempt);
			break;
		case QF_SENDER:
			rc = str_get(v, vlen, env->sender, QUEUE_ADDR_MAX);
			break;
		case QF_CLIENT_ADDR:
			rc = str_get(v, vlen, env->client_addr, QUEUE_CLIENT_ADDR_MAX);
			break;
		case QF_CLIENT_NAME:
			rc = str_get(v, vlen, env->client_name, QUEUE_NAME_MAX);
			break;
		case QF_HELO:
			rc = str_get(v, vlen, env->helo, QUEUE_HELO_MAX);
			break;
		case QF_TLS_VERSION:
			rc = str_get(v, vlen, env->tls_version, QUEUE_TLS_MAX);
			break;
		case QF_TLS_CIPHER:
			rc = str_get(v, vlen, env->tls_cipher, QUEUE_TLS_MAX);
			break;
		case QF_SMTPUTF8:
			rc = vlen == 0 ? 0 : -1;
			env->smtputf8 = true;
			break;
		case QF_BODYTYPE:
			rc = get_u8(v, vlen, QUEUE_BODY_8BITMIME, &x);
			env->body = (enum queue_body)x;
			break;
		case QF_RET:
			rc = get_u8(v, vlen, QUEUE_RET_HDRS, &x);
			env->ret = (enum queue_ret)x;
			break;
		case QF_ENVID:
			rc = str_get(v, vlen, env->envid, QUEUE_ENVID_MAX);
			break;
		case QF_SIZE:
			if (vlen != 8)
				rc = -1;
			else
				env->size = be64_get(v);
			break;
		case QF_RCPT:
			rc = rcpt_get(v, vlen, &env->rcpts[env->nrcpts++]);
			break;
		default:
			if (type < QF_OPTIONAL)
				return QUEUE_FILE_CORRUPT;
			break;
		}
		if (rc == -1)
			return QUEUE_FILE_CORRUPT;
	}
	if (!(seen & ((uint64_t)1 << QF_ID)) || !(seen & ((uint64_t)1 << QF_ARRIVAL)) ||
	    !(seen & ((uint64_t)1 << QF_SENDER)))
		return QUEUE_FILE_CORRUPT;
	return QUEUE_FILE_OK;
}

/* The BODY record header just before the body. */
static bool
body_hdr_ok(const unsigned char *h)
{
	return h[0] == QF_BODY && be32_get(h + 1) == QF_BODY_STREAM;
}

enum queue_file_status
queue_file_decode(const unsigned char *p, size_t len, struct queue_envelope *env,
    struct queue_file_info *info)
{
	enum queue_file_status st;
	uint32_t crc;

	queue_envelope_init(env);
	memset(info, 0, sizeof(*info));
	if ((st = hdr_check(p, len, len, QF_MAGIC)) != QUEUE_FILE_OK)
		return st;
	if (len < QF_END_LEN)
		return QUEUE_FILE_TORN;
	if ((st = end_check(p + len - QF_END_LEN, len, info, &crc)) != QUEUE_FILE_OK)
		return st;
	if (queue_crc32(0, p, len - QF_END_LEN) != crc)
		return QUEUE_FILE_CORRUPT;
	if (!body_hdr_ok(p + info->body_off - QF_REC_HDR))
		return QUEUE_FILE_CORRUPT;
	st = envelope_get(p, info->body_off - QF_REC_HDR, env);
	if (st != QUEUE_FILE_OK)
		queue_envelope_clear(env);
	return st;
}

/* pread() the whole range, or fail (a short file here means it shrank: TORN). */
static enum queue_file_status
pread_full(int fd, void *buf, size_t n, uint64_t off)
{
	unsigned char *b = buf;

	while (n > 0) {
		ssize_t r = pread(fd, b, n, (off_t)off);

		if (r == -1) {
			if (errno == EINTR)
				continue;
			return QUEUE_FILE_IO;
		}
		if (r == 0)
			return QUEUE_FILE_TORN;
		b += r;
		n -= (size_t)r;
		off += (uint64_t)r;
	}
	return QUEUE_FILE_OK;
}

enum queue_file_status
queue_file_read_fd(int fd, struct queue_envelope *env, struct queue_file_info *info)
{
	unsigned char hdr[QF_HDR_LEN], end[QF_END_LEN], *head = NULL, *chunk = NULL;
	enum queue_file_status st;
	struct stat sb;
	uint64_t flen, off;
	uint32_t crc, want;
	size_t hlen;

	queue_envelope_init(env);
	memset(info, 0, sizeof(*info));
	if (fstat(fd, &sb) == -1)
		return QUEUE_FILE_IO;
	flen = (uint64_t)sb.st_size;
	hlen = flen < QF_HDR_LEN ? (size_t)flen : QF_HDR_LEN;
	if ((st = pread_full(fd, hdr, hlen, 0)) != QUEUE_FILE_OK)
		return st;
	if ((st = hdr_check(hdr, hlen, flen, QF_MAGIC)) != QUEUE_FILE_OK)
		return st;
	if (flen < QF_END_LEN)
		return QUEUE_FILE_TORN;
	if ((st = pread_full(fd, end, sizeof(end), flen - QF_END_LEN)) != QUEUE_FILE_OK)
		return st;
	if ((st = end_check(end, flen, info, &want)) != QUEUE_FILE_OK)
		return st;
	if (info->body_off > QUEUE_ENVELOPE_MAX)
		return QUEUE_FILE_CORRUPT;

	hlen = (size_t)info->body_off;
	if ((head = malloc(hlen)) == NULL || (chunk = malloc(65536)) == NULL) {
		st = QUEUE_FILE_NOMEM;
		goto out;
	}
	if ((st = pread_full(fd, head, hlen, 0)) != QUEUE_FILE_OK)
		goto out;
	crc = queue_crc32(0, head, hlen);
	for (off = info->body_off; off < flen - QF_END_LEN; ) {
		uint64_t left = flen - QF_END_LEN - off;
		size_t n = left < 65536 ? (size_t)left : 65536;

		if ((st = pread_full(fd, chunk, n, off)) != QUEUE_FILE_OK)
			goto out;
		crc = queue_crc32(crc, chunk, n);
		off += n;
	}
	if (crc != want || !body_hdr_ok(head + hlen - QF_REC_HDR)) {
		st = QUEUE_FILE_CORRUPT;
		goto out;
	}
	st = envelope_get(head, hlen - QF_REC_HDR, env);
out:
	if (st != QUEUE_FILE_OK)
		queue_envelope_clear(env);
	free(chunk);
	free(head);
	return st;
}

const char *
queue_file_strerror(enum queue_file_status st)
{
	switch (st) {
	case QUEUE_FILE_OK:
		return "ok";
	case QUEUE_FILE_TORN:
		return "torn (incomplete write)";
	case QUEUE_FILE_CORRUPT:
		return "corrupt (checksum or record mismatch)";
	case QUEUE_FILE_BAD_MAGIC:
		return "not a queue file";
	case QUEUE_FILE_VERSION:
		return "unsupported queue file version";
	case QUEUE_FILE_NOMEM:
		return "out of memory";
	case QUEUE_FILE_IO:
		return "read error";
	}
	return "unknown";
}

/* Journal --------------------------------------------------------------- */

static int
jrec_put(struct mx_buf *b, unsigned int type, const unsigned char *v, size_t n)
{
	unsigned char h[QF_REC_HDR], c[4];
	uint32_t crc;
	size_t start = b->len;

	h[0] = (unsigned char)type;
	be32_put(h + 1, (uint32_t)n);
	crc = queue_crc32(queue_crc32(0, h, sizeof(h)), v, n);
	be32_put(c, crc);
	if (mx_buf_add(b, h, sizeof(h)) == -1 || mx_buf_add(b, v, n) == -1 ||
	    mx_buf_add(b, c, sizeof(c)) == -1) {
		b->len = start;
		return -1;
	}
	return 0;
}

int
queue_journal_begin(const char *id, struct mx_buf *out)
{
	unsigned char h[QF_HDR_LEN];
	size_t start = out->len;

	if (!queue_id_valid(id)) {
		errno = EINVAL;
		return -1;
	}
	memcpy(h, QJ_MAGIC, 4);
	be32_put(h + 4, QUEUE_FILE_FORMAT);
	if (mx_buf_add(out, h, sizeof(h)) == -1 ||
	    jrec_put(out, QUEUE_JOURNAL_ID, (const unsigned char *)id, strlen(id)) == -1) {
		out->len = start;
		return -1;
	}
	return 0;
}

int
queue_journal_encode(const struct queue_journal_rec *rec, struct mx_buf *out)
{
	unsigned char v[4 + 1 + 8 + QUEUE_REPLY_MAX];
	long rl;

	switch (rec->type) {
	case QUEUE_JOURNAL_ID:
		if (!queue_id_valid(rec->id))
			break;
		return jrec_put(out, rec->type, (const unsigned char *)rec->id, strlen(rec->id));
	case QUEUE_JOURNAL_RCPT:
		rl = str_check(rec->reply, QUEUE_REPLY_MAX);
		if (rl < 0 || rec->rcpt >= QUEUE_RCPT_MAX || rec->state < QUEUE_RCPT_PENDING ||
		    rec->state > QUEUE_RCPT_DEFERRED)
			break;
		be32_put(v, rec->rcpt);
		v[4] = (unsigned char)rec->state;
		be64_put(v + 5, (uint64_t)rec->time);
		memcpy(v + 13, rec->reply, (size_t)rl);
		return jrec_put(out, rec->type, v, 13 + (size_t)rl);
	case QUEUE_JOURNAL_RETRY:
		be64_put(v, (uint64_t)rec->time);
		be32_put(v + 8, rec->attempts);
		return jrec_put(out, rec->type, v, 12);
	case QUEUE_JOURNAL_HOLD:
		v[0] = rec->held ? 1 : 0;
		return jrec_put(out, rec->type, v, 1);
	case QUEUE_JOURNAL_NONE:
		break;
	}
	errno = EINVAL;
	return -1;
}

/* Decode one journal value whose checksum already matched. */
static int
jrec_get(unsigned int type, const unsigned char *v, uint32_t n, struct queue_journal_rec *rec)
{
	memset(rec, 0, sizeof(*rec));
	switch (type) {
	case QUEUE_JOURNAL_ID:
		rec->type = QUEUE_JOURNAL_ID;
		if (str_get(v, n, rec->id, QUEUE_ID_MAX) == -1 || !queue_id_valid(rec->id))
			return -1;
		return 0;
	case QUEUE_JOURNAL_RCPT:
		rec->type = QUEUE_JOURNAL_RCPT;
		if (n < 13 || v[4] > QUEUE_RCPT_DEFERRED)
			return -1;
		rec->rcpt = be32_get(v);
		rec->state = (enum queue_rcpt_state)v[4];
		rec->time = (int64_t)be64_get(v + 5);
		return str_get(v + 13, n - 13, rec->reply, QUEUE_REPLY_MAX);
	case QUEUE_JOURNAL_RETRY:
		rec->type = QUEUE_JOURNAL_RETRY;
		if (n != 12)
			return -1;
		rec->time = (int64_t)be64_get(v);
		rec->attempts = be32_get(v + 8);
		return 0;
	case QUEUE_JOURNAL_HOLD:
		rec->type = QUEUE_JOURNAL_HOLD;
		if (n != 1 || v[0] > 1)
			return -1;
		rec->held = v[0] == 1;
		return 0;
	}
	return -1;
}

enum queue_journal_result
queue_journal_next(const unsigned char *p, size_t len, size_t *off, struct queue_journal_rec *rec)
{
	if (*off == 0) {
		enum queue_file_status st = hdr_check(p, len, len, QJ_MAGIC);

		if (st == QUEUE_FILE_TORN)
			return QUEUE_JOURNAL_TORN;
		if (st != QUEUE_FILE_OK)
			return QUEUE_JOURNAL_BAD;
		*off = QF_HDR_LEN;
	}
	for (;;) {
		size_t o = *off, rem;
		uint32_t n;
		unsigned int type;

		if (o >= len)
			return QUEUE_JOURNAL_END;
		rem = len - o;
		if (rem < QF_REC_HDR)
			return QUEUE_JOURNAL_TORN;
		type = p[o];
		n = be32_get(p + o + 1);
		if (n > QJ_VALUE_MAX)
			return QUEUE_JOURNAL_BAD;
		if (rem < QF_REC_HDR + (size_t)n + 4)
			return QUEUE_JOURNAL_TORN;
		/* A bad last record is a torn append; one with data after it is damage. */
		if (queue_crc32(0, p + o, QF_REC_HDR + n) != be32_get(p + o + QF_REC_HDR + n))
			return rem == QF_REC_HDR + (size_t)n + 4 ? QUEUE_JOURNAL_TORN :
			    QUEUE_JOURNAL_BAD;
		if (type >= QF_OPTIONAL) {
			*off = o + QF_REC_HDR + n + 4;
			continue;
		}
		if (jrec_get(type, p + o + QF_REC_HDR, n, rec) == -1)
			return QUEUE_JOURNAL_BAD;
		*off = o + QF_REC_HDR + n + 4;
		return QUEUE_JOURNAL_RECORD;
	}
}

int
queue_journal_apply(struct queue_envelope *env, const unsigned char *p, size_t len,
    struct queue_journal_info *info)
{
	struct queue_journal_rec rec;
	enum queue_journal_result r;
	size_t off = 0;

	memset(info, 0, sizeof(*info));
	r = queue_journal_next(p, len, &off, &rec);
	if (r == QUEUE_JOURNAL_END || r == QUEUE_JOURNAL_TORN) {
		/* Created but the ID record never made it: start the journal afresh. */
		info->torn = len > 0;
		return 0;
	}
	if (r == QUEUE_JOURNAL_BAD || rec.type != QUEUE_JOURNAL_ID) {
		info->corrupt = true;
		return 0;
	}
	if (strcmp(rec.id, env->id) != 0) {
		info->corrupt = true;
		return -1;
	}
	info->valid_len = off;

	for (;;) {
		r = queue_journal_next(p, len, &off, &rec);
		if (r == QUEUE_JOURNAL_END)
			break;
		if (r == QUEUE_JOURNAL_TORN) {
			info->torn = true;
			break;
		}
		if (r == QUEUE_JOURNAL_BAD) {
			info->corrupt = true;
			break;
		}
		if (rec.type == QUEUE_JOURNAL_RCPT) {
			struct queue_rcpt *rc;

			if (rec.rcpt >= env->nrcpts) {
				info->corrupt = true;
				break;
			}
			rc = &env->rcpts[rec.rcpt];
			/* Final states stay final: a delivered recipient is never re-sent. */
			if (rc->state != QUEUE_RCPT_DELIVERED && rc->state != QUEUE_RCPT_FAILED) {
				rc->state = rec.state;
				rc->updated = rec.time;
				memcpy(rc->reply, rec.reply, sizeof(rc->reply));
			}
		} else if (rec.type == QUEUE_JOURNAL_RETRY) {
			env->next_attempt = rec.time;
			env->attempts = rec.attempts;
		} else if (rec.type == QUEUE_JOURNAL_HOLD)
			env->held = rec.held;
		else {
			info->corrupt = true;
			break;
		}
		info->records++;
		info->valid_len = off;
	}
	return 0;
}

/* Queue ids ------------------------------------------------------------- */

static const char b62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

void
queue_id_format(char out[QUEUE_ID_LEN + 1], uint64_t usec, uint64_t rnd)
{
	int i;

	/* 62^9 microseconds is about 428 years: fixed width until 2398. */
	for (i = 8; i >= 0; i--) {
		out[i] = b62[usec % 62];
		usec /= 62;
	}
	/* 62^11 > 2^64: all 64 random bits are kept. */
	for (i = QUEUE_ID_LEN - 1; i >= 9; i--) {
		out[i] = b62[rnd % 62];
		rnd /= 62;
	}
	out[QUEUE_ID_LEN] = '\0';
}

int
queue_id_generate(char out[QUEUE_ID_LEN + 1])
{
	struct timespec ts;
	uint64_t rnd;
	ssize_t r;

	if (clock_gettime(CLOCK_REALTIME, &ts) == -1)
		return -1;
	do
		r = getrandom(&rnd, sizeof(rnd), 0);
	while (r == -1 && errno == EINTR);
	if (r != (ssize_t)sizeof(rnd)) {
		if (r >= 0)
			errno = EIO;
		return -1;
	}
	queue_id_format(out, (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u, rnd);
	return 0;
}
