/*
 * The on-disk format of a queued message and of its delivery journal.  Pure
 * encoding and decoding; the queue backend does the opens, writes, fsyncs
 * and renames.
 *
 * Message file "<id>", immutable once renamed into the queue:
 *
 *   "MXQF" version(u32 BE = 1)
 *   envelope records: type(u8) length(u32 BE) value
 *   BODY record header: type 0x7e, length 0xffffffff ("runs to END")
 *   body octets, as received after dot-unstuffing (CRLF line ends)
 *   END record: type 0x7f, length 20, body length(u64), offset of END(u64),
 *               CRC-32 (IEEE) of every octet before END (u32)
 *
 * A file is accepted only if it ends in a well-formed END record whose
 * offsets match the file and whose checksum matches, so truncation at any
 * offset and flipped bits (length fields included) are detected.  The body
 * is written as it arrives; nothing needs the whole message in memory.
 *
 * Delivery journal "<id>.st", append-only: per-recipient results and retry
 * state recorded after the message file was committed, so the message file
 * is never rewritten:
 *
 *   "MXQS" version(u32 BE = 1)
 *   records: type(u8) length(u32 BE) value CRC-32(u32 BE, of type..value)
 *   the first record is ID (the message's queue id).
 *
 * A torn or unreadable tail is ignored: whatever it recorded is done again
 * (at-least-once).  Before appending, the writer truncates the journal to
 * queue_journal_info.valid_len (and writes a fresh header when that is 0),
 * so a new record never follows garbage.
 *
 * Record type numbers and field values are stored on disk: never renumber.
 */
#ifndef MXEDGE_QUEUE_FILE_H
#define MXEDGE_QUEUE_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define QUEUE_FILE_FORMAT 1		/* version written and read */
#define QUEUE_ID_LEN 20			/* what queue_id_generate() makes */
#define QUEUE_ID_MAX 32			/* what a file may carry */
#define QUEUE_ADDR_MAX 320		/* "local@domain": 64 + 1 + 255 */
#define QUEUE_CLIENT_ADDR_MAX 63
#define QUEUE_NAME_MAX 255		/* client host name (reverse DNS) */
#define QUEUE_HELO_MAX 510
#define QUEUE_TLS_MAX 127
#define QUEUE_ENVID_MAX 100
#define QUEUE_ORCPT_MAX 500
#define QUEUE_REPLY_MAX 512
#define QUEUE_RCPT_MAX 1000
/* Bytes before the body that a reader will load: far above what the limits allow. */
#define QUEUE_ENVELOPE_MAX (2u * 1024 * 1024)

enum queue_rcpt_state {
	QUEUE_RCPT_PENDING = 0,
	QUEUE_RCPT_DELIVERED = 1,	/* final */
	QUEUE_RCPT_FAILED = 2,		/* final: bounced */
	QUEUE_RCPT_DEFERRED = 3,	/* 4xx last time, will retry */
};

enum queue_body {
	QUEUE_BODY_NONE = 0,
	QUEUE_BODY_7BIT = 1,
	QUEUE_BODY_8BITMIME = 2,
};

enum queue_ret {
	QUEUE_RET_NONE = 0,
	QUEUE_RET_FULL = 1,
	QUEUE_RET_HDRS = 2,
};

/* DSN NOTIFY bits; 0 means the parameter was not given. */
#define QUEUE_NOTIFY_NEVER	0x01u
#define QUEUE_NOTIFY_SUCCESS	0x02u
#define QUEUE_NOTIFY_FAILURE	0x04u
#define QUEUE_NOTIFY_DELAY	0x08u

/*
 * Every string is NUL-terminated, within its limit, and holds no control
 * octets (< 0x20, 0x7f): the encoder refuses them and the decoder reports
 * CORRUPT, so envelope data can never turn into protocol lines.
 */
struct queue_rcpt {
	char addr[QUEUE_ADDR_MAX + 1];		/* "local@domain", required */
	char orcpt[QUEUE_ORCPT_MAX + 1];	/* "rfc822;xtext" or "" */
	unsigned int notify;			/* QUEUE_NOTIFY_* */
	enum queue_rcpt_state state;
	int64_t updated;			/* time of the last state change, or 0 */
	char reply[QUEUE_REPLY_MAX + 1];	/* last reply from the primary, one line */
};

struct queue_envelope {
	char id[QUEUE_ID_MAX + 1];		/* [0-9A-Za-z], required */
	int64_t arrival;			/* unix seconds */
	int64_t next_attempt;			/* unix seconds */
	char sender[QUEUE_ADDR_MAX + 1];	/* "" is the null path */
	char client_addr[QUEUE_CLIENT_ADDR_MAX + 1];
	char client_name[QUEUE_NAME_MAX + 1];
	char helo[QUEUE_HELO_MAX + 1];
	char tls_version[QUEUE_TLS_MAX + 1];	/* "" without TLS */
	char tls_cipher[QUEUE_TLS_MAX + 1];
	bool smtputf8;
	enum queue_body body;
	enum queue_ret ret;
	char envid[QUEUE_ENVID_MAX + 1];
	uint64_t size;				/* SIZE= declared by the client, 0 if none */
	struct queue_rcpt *rcpts;
	size_t nrcpts;
	size_t rcpts_cap;			/* allocated; managed by queue_envelope_* */
	/* From the journal only; the message file does not carry these. */
	uint32_t attempts;
	bool held;
};

void queue_envelope_init(struct queue_envelope *env);
/* Frees the recipients and re-initialises env. */
void queue_envelope_clear(struct queue_envelope *env);
/* A zeroed recipient at the end, or NULL (errno ENOMEM, or E2BIG past QUEUE_RCPT_MAX). */
struct queue_rcpt *queue_envelope_add_rcpt(struct queue_envelope *env);

/*
 * Streaming encoder.  begin() appends the header and the envelope to out
 * (the caller writes them to the file); the caller then writes the body
 * octets itself and passes each chunk to body() for the checksum; finish()
 * appends the END record.  begin() refuses an invalid envelope with -1 and
 * errno EINVAL (ENOMEM/EMSGSIZE from the buffer); out is left as it was.
 */
struct queue_file_writer {
	uint32_t crc;
	uint64_t len;		/* octets produced so far */
	uint64_t body_len;
	int state;
};

int queue_file_begin(struct queue_file_writer *w, const struct queue_envelope *env,
    struct mx_buf *out);
void queue_file_body(struct queue_file_writer *w, const void *p, size_t len);
int queue_file_finish(struct queue_file_writer *w, struct mx_buf *out);
/* All three at once, for small messages and tests. */
int queue_file_encode(const struct queue_envelope *env, const void *body, size_t len,
    struct mx_buf *out);

enum queue_file_status {
	QUEUE_FILE_OK = 0,
	QUEUE_FILE_TORN,	/* no valid END record: the write never finished */
	QUEUE_FILE_CORRUPT,	/* checksum mismatch or malformed records */
	QUEUE_FILE_BAD_MAGIC,	/* not a queue file */
	QUEUE_FILE_VERSION,	/* a format version this build does not read */
	QUEUE_FILE_NOMEM,
	QUEUE_FILE_IO,		/* read error, errno set */
};

struct queue_file_info {
	uint64_t body_off;	/* first body octet */
	uint64_t body_len;
	uint64_t file_len;
};

/*
 * Verify and decode a whole message file.  On QUEUE_FILE_OK, env holds
 * the envelope (clear it with queue_envelope_clear) and info locates the
 * body; on anything else env is left initialised and empty.
 */
enum queue_file_status queue_file_decode(const unsigned char *p, size_t len,
    struct queue_envelope *env, struct queue_file_info *info);
/* The same from a file descriptor (pread; the body is checksummed in 64 KiB steps). */
enum queue_file_status queue_file_read_fd(int fd, struct queue_envelope *env,
    struct queue_file_info *info);
const char *queue_file_strerror(enum queue_file_status st);

/* Journal ----------------------------------------------------------------- */

enum queue_journal_type {
	QUEUE_JOURNAL_NONE = 0,	/* never written: a zeroed tail must not parse */
	QUEUE_JOURNAL_ID = 1,	/* first record: the queue id */
	QUEUE_JOURNAL_RCPT = 2,	/* a recipient's new state */
	QUEUE_JOURNAL_RETRY = 3,	/* message: next attempt, attempts so far */
	QUEUE_JOURNAL_HOLD = 4,	/* message: held or released */
};

struct queue_journal_rec {
	enum queue_journal_type type;
	char id[QUEUE_ID_MAX + 1];		/* ID */
	uint32_t rcpt;				/* RCPT: index into env->rcpts */
	enum queue_rcpt_state state;		/* RCPT */
	int64_t time;				/* RCPT: when; RETRY: next attempt */
	uint32_t attempts;			/* RETRY */
	bool held;				/* HOLD */
	char reply[QUEUE_REPLY_MAX + 1];	/* RCPT: one line, may be "" */
};

/* Header and ID record of a new journal; 0, or -1 (EINVAL for a bad id). */
int queue_journal_begin(const char *id, struct mx_buf *out);
/* One record; 0, or -1 (EINVAL for bad values: CR/LF in reply, unknown state). */
int queue_journal_encode(const struct queue_journal_rec *rec, struct mx_buf *out);

enum queue_journal_result {
	QUEUE_JOURNAL_END = 0,	/* clean end */
	QUEUE_JOURNAL_RECORD,	/* *rec filled, *off advanced */
	QUEUE_JOURNAL_TORN,	/* incomplete or garbled last record */
	QUEUE_JOURNAL_BAD,	/* a bad record with more data after it, or a bad header */
};

/* Next record at *off (0 = start of the file: the header is checked first). */
enum queue_journal_result queue_journal_next(const unsigned char *p, size_t len, size_t *off,
    struct queue_journal_rec *rec);

struct queue_journal_info {
	size_t valid_len;	/* truncate to this before appending (0: rewrite the header) */
	unsigned int records;	/* applied */
	bool torn;		/* a torn tail was ignored */
	bool corrupt;		/* a bad record, wrong id, or a bad recipient index */
};

/*
 * Apply a whole journal to env, in order.  DELIVERED and FAILED are final:
 * later records for that recipient are ignored.  Records after a bad one
 * are not applied.  Returns 0; -1 only when the journal is for another id
 * (nothing applied, info->corrupt set: move that file aside, never append).
 */
int queue_journal_apply(struct queue_envelope *env, const unsigned char *p, size_t len,
    struct queue_journal_info *info);

/* Queue ids and checksums ------------------------------------------------- */

/*
 * 20 characters of [0-9A-Za-z]: 9 of microseconds since the epoch, 11 of
 * random, both base 62, so ids sort by arrival and are safe as file names.
 */
void queue_id_format(char out[QUEUE_ID_LEN + 1], uint64_t usec, uint64_t rnd);
/* With the real-time clock and getrandom(2); 0, or -1 with errno. */
int queue_id_generate(char out[QUEUE_ID_LEN + 1]);
bool queue_id_valid(const char *s);

/* CRC-32 (IEEE 802.3, as zlib): crc = queue_crc32(0, p, n), chainable. */
uint32_t queue_crc32(uint32_t crc, const void *p, size_t len);

#endif
