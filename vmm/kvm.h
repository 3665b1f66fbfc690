/* /dev/kvm: opening it, the API version, and the capabilities vmm relies
 * on, each checked with a message that names what is missing. */
#ifndef VMM_KVM_H
#define VMM_KVM_H

#include <stddef.h>

struct kvm {
	int fd;
	int vcpu_mmap_size;
	int max_vcpus;
};

/* 0, or a negative errno with a one-line reason in err. */
int kvm_open(struct kvm *kvm, const char *path, char *err, size_t errlen);
void kvm_close(struct kvm *kvm);

#endif
