/*
 * Control protocol framing.  The daemon trusts nothing a client sends: the
 * socket is mode 0660, but requests are parsed strictly anyway.
 */
#include "config.h"

#include <string.h>

#include "control_proto.h"

int
control_split(char *line, char **argv, int max)
{
	int argc = 0;
	char *p = line;

	if (strlen(line) > CONTROL_LINE_MAX)
		return -1;
	for (; *p != '\0'; p++)
		if (*p != ' ' && ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e))
			return -1;
	p = line;
	while (*p != '\0') {
		while (*p == ' ')
			p++;
		if (*p == '\0')
			break;
		if (argc == max)
			return -1;
		argv[argc++] = p;
		while (*p != '\0' && *p != ' ')
			p++;
		if (*p == ' ')
			*p++ = '\0';
	}
	return argc;
}

int
control_reply_parse(char *reply, size_t len, const char **msg, const char **payload)
{
	char *nl = memchr(reply, '\n', len);

	if (nl == NULL)
		return -1;
	*nl = '\0';
	*payload = nl + 1;
	if (strcmp(reply, "ok") == 0) {
		*msg = "";
		return 0;
	}
	if (strncmp(reply, "error ", 6) == 0) {
		*msg = reply + 6;
		return 1;
	}
	return -1;
}
