/*
 * The control socket protocol between mxedge and mxedged, shared by both:
 * the client sends one request line "COMMAND [ARG ...]\n" (at most
 * CONTROL_LINE_MAX bytes, words of printable ASCII); the daemon answers
 * "ok\n" or "error MESSAGE\n", then an optional payload (JSON or text), then
 * closes the connection.  Pure code: framing and parsing only.
 */
#ifndef MXEDGE_CONTROL_PROTO_H
#define MXEDGE_CONTROL_PROTO_H

#include <stddef.h>

#define CONTROL_LINE_MAX 1024
#define CONTROL_MAX_ARGS 16
#define CONTROL_REPLY_MAX (64u * 1024 * 1024)

/*
 * Split a request line (NUL-terminated, no newline) in place.  Returns the
 * number of words, or -1 if the line has a byte outside 0x21..0x7e other
 * than single spaces, or too many words.
 */
int control_split(char *line, char **argv, int max);

/*
 * Split a reply into status and payload.  Returns 0 for "ok", 1 for
 * "error" with *msg pointing at the message (NUL-terminated in place),
 * -1 for a malformed reply.  *payload points after the status line.
 */
int control_reply_parse(char *reply, size_t len, const char **msg, const char **payload);

#endif
