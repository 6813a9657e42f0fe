/*
 * A main() for the fuzz targets without libFuzzer: link it with a target
 * built by any compiler to run the files named in argv through
 * LLVMFuzzerTestOneInput, once each, e.g. to replay a crash under gdb or
 * valgrind.  Files are read whole, up to 16 MiB.
 *
 *   cc -g -Isrc -I<dir with config.h> tests/fuzz/fuzz_X.c tests/fuzz/standalone.c \
 *       src/... -o fuzz_X && ./fuzz_X crash-file...
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define STANDALONE_MAX (16u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
main(int argc, char **argv)
{
	uint8_t *buf;
	size_t n;
	int i;

	if ((buf = malloc(STANDALONE_MAX)) == NULL) {
		perror("malloc");
		return 1;
	}
	for (i = 1; i < argc; i++) {
		FILE *f = fopen(argv[i], "rb");

		if (f == NULL) {
			perror(argv[i]);
			free(buf);
			return 1;
		}
		n = fread(buf, 1, STANDALONE_MAX, f);
		fclose(f);
		LLVMFuzzerTestOneInput(buf, n);
	}
	free(buf);
	return 0;
}
