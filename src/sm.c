/* Stream management (XEP-0198): acknowledgements, the queue of unacked
 * stanzas, hibernation and resumption.  (First cut: the module API only.) */
#include <stdlib.h>

#include "pigeon/module.h"
#include "stream.h"

int
pgn_sm_element(struct pgn_session *s, struct pgn_xml *xml)
{
	(void)s;
	(void)xml;
	return 0;
}

struct pgn_ack_ticket *
pgn_event_ack_ticket(struct pgn_event *ev)
{
	(void)ev;
	return NULL;
}

void
pgn_ack_ticket_done(struct pgn_ack_ticket *t)
{
	(void)t;
}

int
pgn_session_hibernating(const struct pgn_session *s)
{
	(void)s;
	return 0;
}

unsigned
pgn_session_unacked(const struct pgn_session *s)
{
	(void)s;
	return 0;
}
