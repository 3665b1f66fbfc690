/* vCPU and VM state to and from byte blobs, for the migration stream's
 * STATE records (one blob per vCPU, section "vcpu", instance = vCPU index;
 * one for the VM, section "vm"). The format is in docs/migration-state.md:
 * a sequence of items {le16 tag, le16 reserved (0), le32 length, bytes},
 * whose bytes are the x86-64 KVM ABI structs as KVM_GET_* returns them.
 *
 * Also the byte buffers devices serialise their own state through
 * (virtio/device.h's save/load hooks): struct state_writer grows, struct
 * state_reader is a bounded cursor that never reads past its end.
 *
 * The item walker and the blob checks (state_blob.c) are pure, so hostile
 * blobs are unit-tested and fuzzed without KVM (tests/unit/test_state_blob.c,
 * tests/fuzz/fuzz_state.c). */
#ifndef MIGRATE_STATE_H
#define MIGRATE_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Version of the "cpu" and "vm" sections' bytes (STATE record's section
 * version). */
#define STATE_SECTION_VERSION 1

/* ---- Byte buffers ---- */

struct state_writer {
	uint8_t *buf;
	size_t len;
	size_t cap;
	int error; /* first error (-ENOMEM, -E2BIG); later puts do nothing */
};

void state_writer_init(struct state_writer *w);
void state_writer_free(struct state_writer *w);
/* Each returns 0 or the writer's error. */
int state_put_bytes(struct state_writer *w, const void *data, size_t len);
int state_put_le16(struct state_writer *w, uint16_t v);
int state_put_le32(struct state_writer *w, uint32_t v);
int state_put_le64(struct state_writer *w, uint64_t v);
/* One item: header then len bytes of data. */
int state_put_item(struct state_writer *w, uint16_t tag, const void *data, size_t len);

struct state_reader {
	const uint8_t *buf;
	size_t len;
	size_t pos;
};

void state_reader_init(struct state_reader *r, const void *buf, size_t len);
/* Each returns 0, or -EBADMSG without moving when fewer bytes remain. */
int state_get_bytes(struct state_reader *r, void *out, size_t len);
int state_get_le16(struct state_reader *r, uint16_t *v);
int state_get_le32(struct state_reader *r, uint32_t *v);
int state_get_le64(struct state_reader *r, uint64_t *v);
static inline size_t state_reader_left(const struct state_reader *r)
{
	return r->len - r->pos;
}

/* ---- Items ---- */

#define STATE_ITEM_HDR 8

/* vCPU blob tags. */
enum {
	STATE_VCPU_REGS = 1,
	STATE_VCPU_SREGS = 2,
	STATE_VCPU_XSAVE = 3,
	STATE_VCPU_FPU = 4,     /* instead of XSAVE, where KVM lacks KVM_CAP_XSAVE */
	STATE_VCPU_XCRS = 5,    /* optional (KVM_CAP_XCRS) */
	STATE_VCPU_MSRS = 6,
	STATE_VCPU_LAPIC = 7,
	STATE_VCPU_EVENTS = 8,
	STATE_VCPU_MP_STATE = 9,
	STATE_VCPU_DEBUGREGS = 10,
	STATE_VCPU_TSC_KHZ = 11, /* optional: le32, KVM_GET_TSC_KHZ */
};
#define STATE_VCPU_NITEMS 11 /* entries of state_vcpu_items */

/* VM blob tags. */
enum {
	STATE_VM_CLOCK = 1,
	STATE_VM_PIC_MASTER = 2,
	STATE_VM_PIC_SLAVE = 3,
	STATE_VM_IOAPIC = 4,
	STATE_VM_PIT2 = 5,
};
#define STATE_VM_NITEMS 5 /* entries of state_vm_items */

/* What a blob may hold. size: the exact length, or 0 for a variable one
 * (checked by the item's loader). group: 0, or a number shared by items of
 * which exactly one must be present (XSAVE or FPU). */
struct state_item_spec {
	uint16_t tag;
	uint16_t group;
	uint32_t size;
	bool mandatory;
	const char *name;
};

/* One parsed item, at the index of its spec. */
struct state_item {
	const uint8_t *data;
	uint32_t len;
	bool present;
};

extern const struct state_item_spec state_vcpu_items[];
extern const unsigned state_vcpu_nitems;
extern const struct state_item_spec state_vm_items[];
extern const unsigned state_vm_nitems;

/* Walks a blob: every item's reserved field is 0, its tag is in spec (at
 * most once), its length is the spec's size and lies inside the blob; no
 * bytes follow the last item; mandatory items and groups are there. items
 * has nspec entries. Pure. 0 or -EBADMSG with a reason in err. */
int state_parse_items(const uint8_t *blob, size_t len, const struct state_item_spec *spec,
		      unsigned nspec, struct state_item *items, char *err, size_t errlen);

/* The item of tag in items (parsed against spec), or NULL if absent. */
const struct state_item *state_find_item(const struct state_item *items,
					 const struct state_item_spec *spec, unsigned nspec,
					 uint16_t tag);

/* The MSR item: le32 count, le32 0, then count × {le32 index, le32 0,
 * le64 value}. Checks the length, the zero fields, the count (at most
 * STATE_MAX_MSRS) and that no index repeats. Pure. 0 or -EBADMSG. */
#define STATE_MAX_MSRS 1024
#define STATE_MSR_HDR_SIZE 8
#define STATE_MSR_ENTRY_SIZE 16
int state_check_msrs(const uint8_t *data, size_t len, char *err, size_t errlen);

/* Every check of a vCPU or VM blob that needs no KVM, so the loaders
 * below run them all before their first ioctl: the items (as
 * state_parse_items, into items of STATE_VCPU_NITEMS or STATE_VM_NITEMS
 * entries); for a vCPU the MSR item and a TSC rate other than 0; for the
 * VM each irqchip item's chip_id against its tag. Pure. 0 or -EBADMSG. */
int state_check_vcpu(const uint8_t *blob, size_t len, struct state_item *items, char *err,
		     size_t errlen);
int state_check_vm(const uint8_t *blob, size_t len, struct state_item *items, char *err,
		   size_t errlen);

/* The VM blob's irqchip items and the KVM chip each holds. */
struct state_irqchip {
	uint16_t tag;
	uint32_t chip_id;
	const char *name;
};
#define STATE_NIRQCHIPS 3
extern const struct state_irqchip state_irqchips[STATE_NIRQCHIPS];

/* ---- KVM ---- */

/* Saves the vCPU (stopped: its thread is out of KVM_RUN, and pending I/O
 * was completed by a KVM_RUN with immediate_exit) as one blob appended to
 * w. kvm_fd is /dev/kvm's, for the MSR list and capabilities. 0 or -errno. */
int state_save_vcpu(int kvm_fd, int vcpu_fd, struct state_writer *w, char *err, size_t errlen);
/* Loads a blob from state_save_vcpu into a stopped vCPU. 0, -EBADMSG for
 * a bad blob, or -errno from KVM. */
int state_load_vcpu(int vcpu_fd, const uint8_t *blob, size_t len, char *err, size_t errlen);
/* The VM's own state: kvmclock, PIC master and slave, IOAPIC, PIT. The VM
 * has an in-kernel irqchip and PIT (KVM_CREATE_IRQCHIP, KVM_CREATE_PIT2). */
int state_save_vm(int vm_fd, struct state_writer *w, char *err, size_t errlen);
int state_load_vm(int vm_fd, const uint8_t *blob, size_t len, char *err, size_t errlen);

#endif
