/* control_handle_line: request validation and the status command, on a
 * zeroed struct vm (no KVM). */
#include <jansson.h>
#include <stdatomic.h>
#include <string.h>

#include "tests/unit/unit.h"
#include "vmm/control.h"
#include "vmm/vm.h"

static struct vm vm;
static struct control_deferred deferred;

static json_t *handle(const char *line)
{
	return control_handle_line(&vm, line, strlen(line), &deferred);
}

/* Checks that reply is {"ok": false, "error": "...want..."} and frees it. */
static void expect_error(int line, json_t *reply, const char *want)
{
	const char *msg;

	if (!reply) {
		unit_fail(__FILE__, line, "NULL reply");
		return;
	}
	if (!json_is_false(json_object_get(reply, "ok")))
		unit_fail(__FILE__, line, "\"ok\" is not false");
	msg = json_string_value(json_object_get(reply, "error"));
	if (!msg)
		unit_fail(__FILE__, line, "no string \"error\"");
	else if (!strstr(msg, want))
		unit_fail(__FILE__, line, "error \"%s\" does not mention \"%s\"", msg, want);
	json_decref(reply);
}

#define EXPECT_ERROR(line, want) expect_error(__LINE__, handle(line), want)

static void test_malformed(void)
{
	memset(&vm, 0, sizeof(vm));
	EXPECT_ERROR("{", "malformed");
	EXPECT_ERROR("", "malformed");
	EXPECT_ERROR("not json", "malformed");
	EXPECT_ERROR("{\"cmd\":\"status\"", "malformed");
	EXPECT_ERROR("{\"cmd\":\"status\"} {}", "malformed");
	EXPECT_ERROR("{\"cmd\":\"status\",\"cmd\":\"status\"}", "malformed"); /* duplicate key */
	/* Only len bytes are parsed. */
	expect_error(__LINE__, control_handle_line(&vm, "{\"cmd\":\"status\"}", 10, &deferred), "malformed");
}

static void test_bad_requests(void)
{
	memset(&vm, 0, sizeof(vm));
	EXPECT_ERROR("[1]", "cmd");
	EXPECT_ERROR("[{\"cmd\":\"status\"}]", "cmd");
	EXPECT_ERROR("{}", "cmd");
	EXPECT_ERROR("{\"command\":\"status\"}", "cmd");
	EXPECT_ERROR("{\"cmd\":1}", "cmd");
	EXPECT_ERROR("{\"cmd\":null}", "cmd");
	EXPECT_ERROR("{\"cmd\":[\"status\"]}", "cmd");
	EXPECT_ERROR("{\"cmd\":{}}", "cmd");
}

static void test_unknown_command(void)
{
	memset(&vm, 0, sizeof(vm));
	EXPECT_ERROR("{\"cmd\":\"frobnicate\"}", "frobnicate");
	EXPECT_ERROR("{\"cmd\":\"frobnicate\"}", "unknown");
	EXPECT_ERROR("{\"cmd\":\"\"}", "unknown");
	EXPECT_ERROR("{\"cmd\":\"STATUS\"}", "STATUS");
	EXPECT_ERROR("{\"cmd\":\"status \"}", "unknown");
}

/* Error messages that quote the client's bytes: a reply whose text is not
 * valid UTF-8 cannot be built, and a NULL reply reads as a deferred
 * command (found by fuzz_control). Invalid bytes become '?'; valid
 * characters stay. */
static void test_error_not_utf8(void)
{
	/* 63 letters, then "é" (0xc3 0xa9): "%.64s" keeps only its first byte. */
	static const char cut[] = "{\"cmd\":\"" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
				  "\xc3\xa9\"}";
	json_t *reply;

	memset(&vm, 0, sizeof(vm));
	/* jansson's message quotes the bytes up to the bad escape. */
	EXPECT_ERROR("{\"cmd\":\"paus\\\xdd\x82\"}", "malformed");
	/* Bytes jansson cannot decode at all: its message names them in hex. */
	EXPECT_ERROR("{\"cmd\":\"x\\\xff\"}", "malformed");
	EXPECT_ERROR("{\"cmd\":\"x\\\xed\xa0\x80\"}", "malformed"); /* a surrogate */
	EXPECT_ERROR(cut, "unknown command 'aaaa");
	reply = handle(cut);
	REQUIRE(reply);
	CHECK_CONTAINS(json_string_value(json_object_get(reply, "error")), "aaa?'");
	json_decref(reply);
	reply = handle("{\"cmd\":\"h\xc3\xa9\"}");
	REQUIRE(reply);
	CHECK_STREQ(json_string_value(json_object_get(reply, "error")), "unknown command 'h\xc3\xa9'");
	json_decref(reply);
}

static void test_status(void)
{
	static const char req[] = "{\"cmd\":\"status\"}trailing bytes";
	json_t *reply;

	memset(&vm, 0, sizeof(vm));
	vm.ncpus = 3;
	vm.mem.size = 256ULL << 20;
	reply = control_handle_line(&vm, req, strlen("{\"cmd\":\"status\"}"), &deferred);
	REQUIRE(reply);
	CHECK(json_is_true(json_object_get(reply, "ok")));
	CHECK(json_object_get(reply, "error") == NULL);
	CHECK_STREQ(json_string_value(json_object_get(reply, "state")), "running");
	CHECK(json_is_integer(json_object_get(reply, "cpus")));
	CHECK_EQ(json_integer_value(json_object_get(reply, "cpus")), 3);
	CHECK_EQ(json_integer_value(json_object_get(reply, "mem_bytes")), 256LL << 20);
	CHECK_STREQ(json_string_value(json_object_get(reply, "version")), VMM_VERSION);
	CHECK(json_is_null(json_object_get(reply, "boot_marker_ms")));
	json_decref(reply);

	/* Extra fields are ignored; a stop request shows in the state. */
	atomic_store(&vm.stop_reason, VM_STOP_POWEROFF);
	atomic_store(&vm.boot_marker_ns, 2500000);
	vm.ncpus = 1;
	reply = handle("  {\"cmd\": \"status\", \"verbose\": true}\n");
	REQUIRE(reply);
	CHECK(json_is_true(json_object_get(reply, "ok")));
	CHECK_STREQ(json_string_value(json_object_get(reply, "state")), "stopping");
	CHECK_EQ(json_integer_value(json_object_get(reply, "cpus")), 1);
	CHECK(json_is_real(json_object_get(reply, "boot_marker_ms")));
	CHECK(json_real_value(json_object_get(reply, "boot_marker_ms")) == 2.5);
	json_decref(reply);
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	RUN(test_malformed);
	RUN(test_bad_requests);
	RUN(test_unknown_command);
	RUN(test_error_not_utf8);
	RUN(test_status);
	return unit_done();
}
