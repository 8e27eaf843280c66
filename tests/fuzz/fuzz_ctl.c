/* libFuzzer target for the control-socket request codec (src/ctl/ctl_proto.c).
 *
 * The input is what a local client wrote on the socket.  It is given to
 * the decoder in two pieces (split by byte 0, as reads may cut it), then
 * whole.  A decoded request must have 1..PGN_CTL_MAX_ARGS arguments, a
 * non-empty command name (other arguments may be empty) and re-encode and
 * decode to the same argv; the decoder must never consume bytes unless it
 * returns a request. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "pigeon/ctl.h"

static void
check_reencode(int argc, char **argv)
{
	struct evbuffer *b = evbuffer_new();
	int argc2 = 0;
	char **argv2 = NULL;

	if (!b)
		abort();
	if (argc < 1 || argc > PGN_CTL_MAX_ARGS || argv[0][0] == '\0' ||
	    argv[argc] != NULL) {
		fprintf(stderr, "ctl: decoded request breaks the contract\n");
		abort();
	}
	if (pgn_ctl_encode(b, argc, argv) != 0) {
		fprintf(stderr, "ctl: decoded request (%d args) does not re-encode\n",
			argc);
		abort();
	}
	if (pgn_ctl_decode(b, &argc2, &argv2) != 1 || argc2 != argc) {
		fprintf(stderr, "ctl: re-encoded request does not decode\n");
		abort();
	}
	for (int i = 0; i < argc; i++)
		if (strcmp(argv[i], argv2[i]) != 0) {
			fprintf(stderr, "ctl: argument %d differs\n", i);
			abort();
		}
	if (evbuffer_get_length(b) != 0)
		abort();
	(void)pgn_ctl_command_find(argv[0]);
	pgn_ctl_argv_free(argc2, argv2);
	evbuffer_free(b);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct evbuffer *in;
	size_t split, before;
	int argc, rc;
	char **argv;

	if (size < 1)
		return 0;
	split = data[0];
	data++;
	size--;
	if (split > size)
		split = size;

	in = evbuffer_new();
	if (!in)
		return 0;
	/* First the partial request, as after a short read. */
	evbuffer_add(in, data, split);
	before = evbuffer_get_length(in);
	rc = pgn_ctl_decode(in, &argc, &argv);
	if (rc == 1) {
		check_reencode(argc, argv);
		pgn_ctl_argv_free(argc, argv);
	} else {
		if (argv != NULL || evbuffer_get_length(in) != before)
			abort();
	}
	if (rc >= 0) {
		evbuffer_add(in, data + split, size - split);
		/* Requests pipelined in one write are taken one by one. */
		for (int n = 0; n < 64; n++) {
			before = evbuffer_get_length(in);
			rc = pgn_ctl_decode(in, &argc, &argv);
			if (rc != 1) {
				if (argv != NULL ||
				    evbuffer_get_length(in) != before)
					abort();
				break;
			}
			if (argc < 1 || argc > PGN_CTL_MAX_ARGS ||
			    evbuffer_get_length(in) >= before)
				abort();
			check_reencode(argc, argv);
			pgn_ctl_argv_free(argc, argv);
		}
	}
	evbuffer_free(in);
	return 0;
}
