/* virtio-blk (device id 2) on a raw image file, one device per --disk.
 * Requests go to the image through one io_uring per disk, many in flight;
 * completions come back on the device thread (the ring's eventfd is the
 * transport's io_fd) and are matched to their used-ring entries. See
 * docs/blk.md. */
#ifndef VIRTIO_BLK_H
#define VIRTIO_BLK_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#define BLK_MAX_DISKS 8

struct vm;
struct virtio_dev;
struct blk;

struct blk_options {
	char path[PATH_MAX];
	bool ro;
	bool direct;     /* O_DIRECT: bypass the host page cache */
	char id[21];     /* GET_ID answer: up to 20 bytes, "" for none */
};

/* Parses "PATH[,ro][,direct][,id=NAME]". 0 or -EINVAL with a reason in err. */
int blk_parse_options(const char *s, struct blk_options *opts, char *err, size_t errlen);

/* Opens the image and sets up the device without its virtio-mmio window
 * and thread (see virtio_dev_init): what blk_create attaches. NULL with a
 * reason in err. */
struct blk *blk_open(struct vm *vm, const struct blk_options *opts, unsigned instance, char *err,
		     size_t errlen);
/* Opens the image and creates the device as virtio-mmio device number
 * index; instance numbers the disks (blk0, blk1, ...). NULL with a reason
 * in err. */
struct blk *blk_create(struct vm *vm, const struct blk_options *opts, unsigned index,
		       unsigned instance, char *err, size_t errlen);
/* Waits for requests in flight, stops the device, closes the image. */
void blk_destroy(struct blk *b);
struct virtio_dev *blk_dev(struct blk *b);
/* How long pause, reset and destroy wait for requests in flight (default
 * 10 s); tests shorten it. */
void blk_set_drain_timeout(struct blk *b, int ms);

#endif
