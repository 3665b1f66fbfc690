/* --disk PATH[,ro][,direct][,id=NAME] to struct blk_options; see blk.h. */
#include "virtio/blk.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "virtio/blk_req.h"
#include "vmm/util.h"

static bool valid_id(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > BLK_ID_BYTES)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '.' || *s == '_' || *s == '-'))
			return false;
	return true;
}

int blk_parse_options(const char *s, struct blk_options *opts, char *err, size_t errlen)
{
	const char *comma = strchr(s, ',');
	size_t plen = comma ? (size_t)(comma - s) : strlen(s);
	char *copy, *save = NULL, *tok;
	int rc = 0;

	memset(opts, 0, sizeof(*opts));
	if (plen == 0)
		return errf(-EINVAL, err, errlen, "--disk: empty path (PATH[,ro][,direct][,id=NAME])");
	if (plen >= sizeof(opts->path))
		return errf(-EINVAL, err, errlen, "--disk: path too long");
	memcpy(opts->path, s, plen);
	if (!comma)
		return 0;
	copy = strdup(comma + 1);
	if (!copy)
		return errf(-ENOMEM, err, errlen, "out of memory");
	for (tok = strtok_r(copy, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save)) {
		if (!strcmp(tok, "ro"))
			opts->ro = true;
		else if (!strcmp(tok, "direct"))
			opts->direct = true;
		else if (!strncmp(tok, "id=", 3) && valid_id(tok + 3))
			snprintf(opts->id, sizeof(opts->id), "%s", tok + 3);
		else if (!strncmp(tok, "id=", 3))
			rc = errf(-EINVAL, err, errlen,
				  "--disk: id '%s' is not 1 to 20 of A-Z a-z 0-9 . _ -", tok + 3);
		else
			rc = errf(-EINVAL, err, errlen, "--disk: unknown option '%s' (ro, direct, id=NAME)",
				  tok);
	}
	free(copy);
	return rc;
}
