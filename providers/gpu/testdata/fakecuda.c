// fakecuda.c: a stand-in for libcuda.so.1, for the gpu provider's tests.
//
// It exports the CUDA driver API entry points the provider uses, with their
// signatures, backed by host memory: each "device" allocation is a memfd
// mapped MAP_SHARED at the address returned as its CUdeviceptr, and
// cuMemGetHandleForAddressRange returns a dup of that memfd as the "dmabuf",
// so a test can map it and see device bytes. It enforces what the real
// driver does where the provider could get it wrong: a context must be
// current on the calling thread, device ranges must lie inside one
// allocation, dmabuf export needs page-aligned ranges, host unregistration
// needs a prior registration.
//
// Environment knobs (read at each call):
//   FAKECUDA_DEVICES=N   number of devices (default 1)
//   FAKECUDA_NO_DMABUF=1 CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED = 0
//   FAKECUDA_NO_DEVICE=1 cuInit fails with CUDA_ERROR_NO_DEVICE
//
// Build: gcc -shared -fPIC -O2 -o libfakecuda.so fakecuda.c
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef void *CUstream;
typedef unsigned long long CUdeviceptr;

enum {
	CUDA_SUCCESS = 0,
	CUDA_ERROR_INVALID_VALUE = 1,
	CUDA_ERROR_OUT_OF_MEMORY = 2,
	CUDA_ERROR_NOT_INITIALIZED = 3,
	CUDA_ERROR_NO_DEVICE = 100,
	CUDA_ERROR_INVALID_DEVICE = 101,
	CUDA_ERROR_INVALID_CONTEXT = 201,
	CUDA_ERROR_INVALID_HANDLE = 400,
	CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED = 712,
	CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED = 713,
	CUDA_ERROR_NOT_SUPPORTED = 801,
};

#define TOTAL_MEM (1ULL << 30)
#define MAX_ALLOCS 4096
#define MAX_REGS 256

struct alloc {
	CUdeviceptr base;
	size_t size;
	int fd;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct alloc allocs[MAX_ALLOCS];
static struct {
	void *p;
	size_t n;
} regs[MAX_REGS];
static int initialized;
static char contexts[16];
static __thread CUcontext current;

static int env_flag(const char *name) {
	const char *v = getenv(name);
	return v != NULL && strcmp(v, "1") == 0;
}

static int device_count(void) {
	const char *v = getenv("FAKECUDA_DEVICES");
	return v ? atoi(v) : 1;
}

static int valid_context(CUcontext c) {
	return c != NULL && (char *)c >= contexts && (char *)c < contexts + device_count() && (char *)c < contexts + sizeof contexts;
}

// in_alloc reports whether [p, p+n) lies inside one allocation; mu held.
static struct alloc *in_alloc(CUdeviceptr p, size_t n) {
	for (int i = 0; i < MAX_ALLOCS; i++) {
		struct alloc *a = &allocs[i];
		if (a->size != 0 && p >= a->base && n <= a->size && p - a->base <= a->size - n) {
			return a;
		}
	}
	return NULL;
}

// check_ctx: a context must be current on this thread.
#define CHECK_CTX()                                   \
	do {                                              \
		if (!initialized) return CUDA_ERROR_NOT_INITIALIZED; \
		if (!valid_context(current)) return CUDA_ERROR_INVALID_CONTEXT; \
	} while (0)

CUresult cuInit(unsigned int flags) {
	if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
	if (env_flag("FAKECUDA_NO_DEVICE")) return CUDA_ERROR_NO_DEVICE;
	initialized = 1;
	return CUDA_SUCCESS;
}

CUresult cuDriverGetVersion(int *v) {
	if (!v) return CUDA_ERROR_INVALID_VALUE;
	*v = 12040;
	return CUDA_SUCCESS;
}

CUresult cuGetErrorName(CUresult r, const char **s) {
	switch (r) {
	case CUDA_SUCCESS: *s = "CUDA_SUCCESS"; break;
	case CUDA_ERROR_INVALID_VALUE: *s = "CUDA_ERROR_INVALID_VALUE"; break;
	case CUDA_ERROR_OUT_OF_MEMORY: *s = "CUDA_ERROR_OUT_OF_MEMORY"; break;
	case CUDA_ERROR_NOT_INITIALIZED: *s = "CUDA_ERROR_NOT_INITIALIZED"; break;
	case CUDA_ERROR_NO_DEVICE: *s = "CUDA_ERROR_NO_DEVICE"; break;
	case CUDA_ERROR_INVALID_DEVICE: *s = "CUDA_ERROR_INVALID_DEVICE"; break;
	case CUDA_ERROR_INVALID_CONTEXT: *s = "CUDA_ERROR_INVALID_CONTEXT"; break;
	case CUDA_ERROR_INVALID_HANDLE: *s = "CUDA_ERROR_INVALID_HANDLE"; break;
	case CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED: *s = "CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED"; break;
	case CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED: *s = "CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED"; break;
	case CUDA_ERROR_NOT_SUPPORTED: *s = "CUDA_ERROR_NOT_SUPPORTED"; break;
	default: return CUDA_ERROR_INVALID_VALUE;
	}
	return CUDA_SUCCESS;
}

CUresult cuDeviceGetCount(int *n) {
	if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
	*n = device_count();
	return CUDA_SUCCESS;
}

CUresult cuDeviceGet(CUdevice *d, int ordinal) {
	if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
	if (ordinal < 0 || ordinal >= device_count()) return CUDA_ERROR_INVALID_DEVICE;
	*d = ordinal;
	return CUDA_SUCCESS;
}

CUresult cuDeviceGetName(char *name, int len, CUdevice d) {
	if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
	if (d < 0 || d >= device_count() || len <= 0) return CUDA_ERROR_INVALID_VALUE;
	strncpy(name, "Fake CUDA Device", len - 1);
	name[len - 1] = 0;
	return CUDA_SUCCESS;
}

CUresult cuDeviceGetAttribute(int *v, int attr, CUdevice d) {
	if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
	if (d < 0 || d >= device_count()) return CUDA_ERROR_INVALID_DEVICE;
	*v = 0;
	if (attr == 124) *v = env_flag("FAKECUDA_NO_DMABUF") ? 0 : 1; // CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED
	return CUDA_SUCCESS;
}

CUresult cuDeviceTotalMem_v2(size_t *n, CUdevice d) {
	if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
	if (d < 0 || d >= device_count()) return CUDA_ERROR_INVALID_DEVICE;
	*n = TOTAL_MEM;
	return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d) {
	if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
	if (d < 0 || d >= device_count() || d >= (int)sizeof contexts) return CUDA_ERROR_INVALID_DEVICE;
	*c = &contexts[d];
	return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) {
	if (d < 0 || d >= device_count()) return CUDA_ERROR_INVALID_DEVICE;
	return CUDA_SUCCESS;
}

CUresult cuCtxSetCurrent(CUcontext c) {
	if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
	if (c != NULL && !valid_context(c)) return CUDA_ERROR_INVALID_CONTEXT;
	current = c;
	return CUDA_SUCCESS;
}

CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n) {
	CHECK_CTX();
	if (n == 0) return CUDA_ERROR_INVALID_VALUE;
	if (n > TOTAL_MEM) return CUDA_ERROR_OUT_OF_MEMORY;
	int fd = memfd_create("fakecuda", MFD_CLOEXEC);
	if (fd < 0) return CUDA_ERROR_OUT_OF_MEMORY;
	if (ftruncate(fd, (off_t)n) != 0) {
		close(fd);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	void *m = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		close(fd);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	pthread_mutex_lock(&mu);
	for (int i = 0; i < MAX_ALLOCS; i++) {
		if (allocs[i].size == 0) {
			allocs[i] = (struct alloc){(CUdeviceptr)(uintptr_t)m, n, fd};
			pthread_mutex_unlock(&mu);
			*p = (CUdeviceptr)(uintptr_t)m;
			return CUDA_SUCCESS;
		}
	}
	pthread_mutex_unlock(&mu);
	munmap(m, n);
	close(fd);
	return CUDA_ERROR_OUT_OF_MEMORY;
}

CUresult cuMemFree_v2(CUdeviceptr p) {
	CHECK_CTX();
	pthread_mutex_lock(&mu);
	for (int i = 0; i < MAX_ALLOCS; i++) {
		if (allocs[i].size != 0 && allocs[i].base == p) {
			struct alloc a = allocs[i];
			allocs[i].size = 0;
			pthread_mutex_unlock(&mu);
			munmap((void *)(uintptr_t)a.base, a.size);
			close(a.fd);
			return CUDA_SUCCESS;
		}
	}
	pthread_mutex_unlock(&mu);
	return CUDA_ERROR_INVALID_VALUE;
}

CUresult cuMemGetHandleForAddressRange(void *handle, CUdeviceptr p, size_t n, int type, unsigned long long flags) {
	CHECK_CTX();
	long page = sysconf(_SC_PAGESIZE);
	if (type != 1 || flags != 0 || handle == NULL) return CUDA_ERROR_INVALID_VALUE; // CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD
	if (env_flag("FAKECUDA_NO_DMABUF")) return CUDA_ERROR_NOT_SUPPORTED;
	if (p % page != 0 || n % page != 0) return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&mu);
	struct alloc *a = in_alloc(p, n);
	// The memfd stands in for the dmabuf; it maps from the allocation's
	// start, so only whole-allocation prefixes are representable.
	int fd = (a && a->base == p) ? fcntl(a->fd, F_DUPFD_CLOEXEC, 0) : -1;
	pthread_mutex_unlock(&mu);
	if (fd < 0) return CUDA_ERROR_INVALID_VALUE;
	*(int *)handle = fd;
	return CUDA_SUCCESS;
}

CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n) {
	CHECK_CTX();
	pthread_mutex_lock(&mu);
	struct alloc *a = in_alloc(dst, n);
	pthread_mutex_unlock(&mu);
	if (!a) return CUDA_ERROR_INVALID_VALUE;
	memcpy((void *)(uintptr_t)dst, src, n);
	return CUDA_SUCCESS;
}

CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n) {
	CHECK_CTX();
	pthread_mutex_lock(&mu);
	struct alloc *a = in_alloc(src, n);
	pthread_mutex_unlock(&mu);
	if (!a) return CUDA_ERROR_INVALID_VALUE;
	memcpy(dst, (void *)(uintptr_t)src, n);
	return CUDA_SUCCESS;
}

struct stream {
	int magic;
};

CUresult cuStreamCreate(CUstream *s, unsigned int flags) {
	CHECK_CTX();
	struct stream *st = malloc(sizeof *st);
	if (!st) return CUDA_ERROR_OUT_OF_MEMORY;
	st->magic = 0x57e4;
	*s = st;
	return CUDA_SUCCESS;
}

CUresult cuStreamDestroy_v2(CUstream s) {
	CHECK_CTX();
	struct stream *st = s;
	if (!st || st->magic != 0x57e4) return CUDA_ERROR_INVALID_HANDLE;
	st->magic = 0;
	free(st);
	return CUDA_SUCCESS;
}

CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s) {
	CHECK_CTX();
	struct stream *st = s;
	if (!st || st->magic != 0x57e4) return CUDA_ERROR_INVALID_HANDLE;
	pthread_mutex_lock(&mu);
	struct alloc *a = in_alloc(dst, n), *b = in_alloc(src, n);
	pthread_mutex_unlock(&mu);
	if (!a || !b) return CUDA_ERROR_INVALID_VALUE;
	memmove((void *)(uintptr_t)dst, (void *)(uintptr_t)src, n); // runs "on the stream" at once
	return CUDA_SUCCESS;
}

CUresult cuStreamSynchronize(CUstream s) {
	CHECK_CTX();
	struct stream *st = s;
	if (!st || st->magic != 0x57e4) return CUDA_ERROR_INVALID_HANDLE;
	return CUDA_SUCCESS;
}

CUresult cuMemHostRegister_v2(void *p, size_t n, unsigned int flags) {
	CHECK_CTX();
	if (!p || n == 0) return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&mu);
	int slot = -1;
	for (int i = 0; i < MAX_REGS; i++) {
		if (regs[i].p == p) {
			pthread_mutex_unlock(&mu);
			return CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED;
		}
		if (regs[i].p == NULL && slot < 0) slot = i;
	}
	if (slot >= 0) {
		regs[slot].p = p;
		regs[slot].n = n;
	}
	pthread_mutex_unlock(&mu);
	return slot >= 0 ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

CUresult cuMemHostUnregister(void *p) {
	CHECK_CTX();
	pthread_mutex_lock(&mu);
	for (int i = 0; i < MAX_REGS; i++) {
		if (regs[i].p == p) {
			regs[i].p = NULL;
			pthread_mutex_unlock(&mu);
			return CUDA_SUCCESS;
		}
	}
	pthread_mutex_unlock(&mu);
	return CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;
}
