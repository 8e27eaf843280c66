/* XEP-0092: Software Version of the server.  Option show_os (default
 * false) adds the operating system, which some admins prefer to hide. */
#include <string.h>
#include <sys/utsname.h>

#include "pigeon/module.h"

#define NS_VERSION "jabber:iq:version"

static int
add_text_child(struct pgn_xml *parent, const char *name, const char *text)
{
	struct pgn_xml *c = pgn_xml_add_child(parent, NS_VERSION, name);
	if (c == NULL)
		return -1;
	return pgn_xml_add_text(c, text, strlen(text));
}

static int
on_version(struct pgn_event *ev, void *arg)
{
	struct pgn_module *m = arg;
	struct pgn_xml *q = pgn_xml_new(NS_VERSION, "query");
	struct utsname u;

	if (q == NULL || add_text_child(q, "name", "Pigeon") != 0 ||
	    add_text_child(q, "version", pgn_server_version()) != 0)
		goto fail;
	if (pgn_module_opt_bool(m, "show_os") && uname(&u) == 0 &&
	    add_text_child(q, "os", u.sysname) != 0)
		goto fail;
	pgn_event_reply(ev, q);
	return PGN_EVENT_HANDLED;
fail:
	pgn_xml_free(q);
	pgn_event_error(ev, "wait", "resource-constraint");
	return PGN_EVENT_HANDLED;
}

static int
version_load(struct pgn_module *m)
{
	int rc = pgn_module_hook(m, "iq-get/host/" NS_VERSION ":query",
				 on_version, m, PGN_PRIO_HANDLER);
	if (rc < 0)
		return rc;
	return pgn_module_add_feature(m, NS_VERSION);
}

static const struct pgn_module_opt version_options[] = {
	{ .name = "show_os", .type = PGN_OPT_BOOL, .def = "false",
	  .doc = "include the operating system's name in the answer" },
	{ .name = NULL },
};

const struct pgn_module_def pgn_module_def = {
	.abi = PGN_MODULE_ABI,
	.name = "mod_version",
	.description = "XEP-0092 Software Version",
	.options = version_options,
	.load = version_load,
};
