// fakecuda.c: a stand-in for libcuda.so.1, for the gpu provider's tests.
//
// It exports the CUDA driver API entry points the provider uses, with their
// signatures, backed by host memory: each "device" allocation is a memfd
// mapped MAP_SHARED at the address returned as its CUdeviceptr. It enforces
// what the real driver does where the provider could get it wrong:
//
//   - a context must be current on the calling thread;
//   - device ranges must lie inside one allocation;
//   - a dmabuf (cuMemGetHandleForAddressRange) cannot be mapped by the CPU,
//     as the NVIDIA exporter refuses mmap of video memory (nv_dma_buf_mmap
//     returns -ENOTSUPP): the fd is an O_PATH descriptor of a memfd of the
//     range's size, so fstat reports the size, /proc/self/fd names it
//     "fakecuda-dmabuf", and every mmap fails (EBADF);
//   - the exported range must be page-aligned for cuMemAlloc memory and
//     aligned to the allocation granularity for VMM memory (cuMemCreate +
//     cuMemMap, as PyTorch's expandable segments allocate);
//   - cuMemcpyDtoDAsync only queues the copy on its stream: the bytes move
//     at cuStreamSynchronize (or cuStreamDestroy, or cuMemFree/cuMemUnmap,
//     which synchronize the device). A synchronous cuMemcpyHtoD/DtoH runs on
//     the legacy default stream, so it waits for blocking streams only: a
//     read-back after a gather on a CU_STREAM_NON_BLOCKING stream that was
//     not synchronized sees the old bytes, as on a GPU;
//   - cuFlushGPUDirectRDMAWrites needs a current context, target
//     CURRENT_CTX and scope TO_OWNER or TO_ALL_DEVICES, and the HOST bit in
//     CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_FLUSH_WRITES_OPTIONS;
//   - host unregistration needs a prior registration;
//   - CUDA IPC (cuIpcGetMemHandle, cuIpcOpenMemHandle_v2,
//     cuIpcCloseMemHandle): a handle is 64 opaque bytes naming the owner's
//     memfd by pid, fd number and inode; opening it maps that memfd
//     (through /proc/PID/fd/N) MAP_SHARED, so bytes written by the importer
//     are the owner's. As on the real driver: opening a handle in the
//     process that made it fails with CUDA_ERROR_INVALID_CONTEXT, and a
//     handle whose memory its owner freed (or whose owner exited) with
//     CUDA_ERROR_INVALID_VALUE; the memory an importer has open stays valid
//     after the owner frees it; cuMemFree of an opened handle's memory fails
//     (close it with cuIpcCloseMemHandle). Only cuMemAlloc memory has IPC
//     handles: VMM memory is refused with CUDA_ERROR_INVALID_VALUE, the code
//     the driver is reported to give for memory cuMemAlloc did not allocate
//     (stream-ordered pool memory; not checked on a GPU for VMM memory,
//     which the driver documents as not IPC-capable). The stand-in is
//     stricter than the driver in one place: it takes only an
//     allocation's base address, where the
//     driver silently returns the whole allocation's handle for an interior
//     pointer, so a caller that forgets to send the pointer's offset within
//     its allocation (cuMemGetAddressRange) fails here instead of having
//     bytes land at the allocation's start;
//   - VMM sharing (cuMemExportToShareableHandle,
//     cuMemImportFromShareableHandle, cuMemRetainAllocationHandle): POSIX
//     fds only (CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR), and export only of
//     memory created with that type in
//     CUmemAllocationProp.requestedHandleTypes, else
//     CUDA_ERROR_INVALID_VALUE (the code is the stand-in's choice: not
//     checked on a GPU); the exported fd is a memfd named
//     "fakecuda-vmm"; an imported handle is mapped with cuMemAddressReserve,
//     cuMemMap and cuMemSetAccess like a created one. Handles are reference
//     counted: cuMemCreate, cuMemImportFromShareableHandle and
//     cuMemRetainAllocationHandle each take a reference for cuMemRelease to
//     drop, and the memory lives while a reference or a mapping does;
//   - cuMemGetAddressRange_v2, and cuPointerGetAttribute with
//     CU_POINTER_ATTRIBUTE_RANGE_START_ADDR or _RANGE_SIZE (other attributes
//     are not modelled: CUDA_ERROR_NOT_SUPPORTED), give the allocation (or
//     VMM mapping) around an address.
//
// Environment knobs (read at each call):
//   FAKECUDA_DEVICES=N             number of devices (default 1)
//   FAKECUDA_NO_DMABUF=1           CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED = 0
//   FAKECUDA_NO_DEVICE=1           cuInit fails with CUDA_ERROR_NO_DEVICE
//   FAKECUDA_RDMA_ORDERING=N       CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_WRITES_ORDERING
//                                  (default 100, OWNER; 0 is NONE, pre-Hopper)
//   FAKECUDA_RDMA_FLUSH_OPTIONS=N  CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_FLUSH_WRITES_OPTIONS
//                                  (default 1, HOST)
//   FAKECUDA_NO_ATTR=N             cuDeviceGetAttribute(N) fails with
//                                  CUDA_ERROR_INVALID_VALUE (an older driver)
//   FAKECUDA_TRACE=/path           append a line per cuFlushGPUDirectRDMAWrites
//                                  ("flush TARGET SCOPE"), cuMemcpyDtoDAsync
//                                  ("dtod-async") and cuStreamSynchronize
//                                  ("stream-sync")
//
// Build: gcc -shared -fPIC -O2 -o libfakecuda.so fakecuda.c
// With -DFAKECUDA_NO_VMM_IMPORT it lacks cuMemImportFromShareableHandle, as
// a driver too old to import VMM memory does.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../cudatypes.h"

enum {
	CUDA_SUCCESS = 0,
	CUDA_ERROR_INVALID_VALUE = 1,
	CUDA_ERROR_OUT_OF_MEMORY = 2,
	CUDA_ERROR_NOT_INITIALIZED = 3,
	CUDA_ERROR_NO_DEVICE = 100,
	CUDA_ERROR_INVALID_DEVICE = 101,
	CUDA_ERROR_INVALID_CONTEXT = 201,
	CUDA_ERROR_INVALID_HANDLE = 400,
	CUDA_ERROR_NOT_FOUND = 500,
	CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED = 712,
	CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED = 713,
	CUDA_ERROR_NOT_SUPPORTED = 801,
};

enum {
	ATTR_GPU_DIRECT_RDMA_FLUSH_WRITES_OPTIONS = 117,
	ATTR_GPU_DIRECT_RDMA_WRITES_ORDERING = 118,
	ATTR_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED = 102,
	ATTR_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED = 103,
	ATTR_DMA_BUF_SUPPORTED = 124,
	FLUSH_OPTION_HOST = 1 << 0,
	FLUSH_TARGET_CURRENT_CTX = 0,
	FLUSH_TO_OWNER = 100,
	FLUSH_TO_ALL_DEVICES = 200,
	ORDERING_OWNER = 100,
	STREAM_NON_BLOCKING = 1,
	MEM_ALLOCATION_TYPE_PINNED = 1,
	MEM_LOCATION_TYPE_DEVICE = 1,
	MEM_ACCESS_FLAGS_PROT_READ = 1,
	MEM_ACCESS_FLAGS_PROT_READWRITE = 3,
	MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR = 1,
	IPC_MEM_LAZY_ENABLE_PEER_ACCESS = 1,
};

// CUipcMemHandle's 64 opaque bytes, in the stand-in's layout: the
// owner's memfd.
struct ipc_handle {
	char magic[8]; // "BXFAKIPC"
	int32_t pid;   // the owner process
	int32_t fd;    // the allocation's memfd in the owner
	uint64_t ino;  // its inode, so a reused fd number is told apart
	uint64_t size; // the allocation's size
};

#define TOTAL_MEM (1ULL << 30)
#define GRANULARITY (2ULL << 20) // cuMemGetAllocationGranularity on current GPUs
#define MAX_ALLOCS 4096
#define MAX_REGS 256
#define MAX_RESERVATIONS 64

// An allocation is cuMemAlloc memory or one cuMemMap mapping of VMM memory.
struct alloc {
	CUdeviceptr base;
	size_t size;
	int fd;             // cuMemAlloc's (or an opened IPC handle's) memfd, or -1 for a VMM mapping
	struct vmm *handle; // the mapped cuMemCreate handle, or NULL
	int access;         // usable by copies (cuMemAlloc; VMM after cuMemSetAccess)
	int ipc;            // opened with cuIpcOpenMemHandle_v2: cuIpcCloseMemHandle releases it
};

// A vmm is a cuMemCreate allocation.
struct vmm {
	int magic;
	int fd;
	size_t size;
	int maps;         // live cuMemMap mappings
	int refs;         // handles not yet given to cuMemRelease
	int handle_types; // CUmemAllocationProp.requestedHandleTypes
};

struct reservation {
	CUdeviceptr base;
	size_t size;
};

struct op {
	CUdeviceptr dst, src;
	size_t n;
};

struct stream {
	unsigned int flags;
	struct op *ops; // queued, not yet run
	size_t nops, cap;
	struct stream *next;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct alloc allocs[MAX_ALLOCS];
static struct reservation reservations[MAX_RESERVATIONS];
static struct stream *streams;
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

static int env_int(const char *name, int def) {
	const char *v = getenv(name);
	return v != NULL && *v != 0 ? atoi(v) : def;
}

static int device_count(void) { return env_int("FAKECUDA_DEVICES", 1); }

static void trace(const char *fmt, int a, int b) {
	const char *path = getenv("FAKECUDA_TRACE");
	if (path == NULL || *path == 0) return;
	char line[64];
	int n = snprintf(line, sizeof line, fmt, a, b);
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) return;
	if (write(fd, line, (size_t)n) != n) {
		// a test reading the trace sees the line missing
	}
	close(fd);
}

static int valid_context(CUcontext c) {
	return c != NULL && (char *)c >= contexts && (char *)c < contexts + device_count() && (char *)c < contexts + sizeof contexts;
}

// in_alloc returns the usable allocation [p, p+n) lies inside; mu held.
static struct alloc *in_alloc(CUdeviceptr p, size_t n) {
	for (int i = 0; i < MAX_ALLOCS; i++) {
		struct alloc *a = &allocs[i];
		if (a->size != 0 && a->access && p >= a->base && n <= a->size && p - a->base <= a->size - n) {
			return a;
		}
	}
	return NULL;
}

static struct alloc *free_slot(void) {
	for (int i = 0; i < MAX_ALLOCS; i++) {
		if (allocs[i].size == 0) return &allocs[i];
	}
	return NULL;
}

// run_stream performs the copies queued on s, in order; mu held.
static void run_stream(struct stream *s) {
	for (size_t i = 0; i < s->nops; i++) {
		memmove((void *)(uintptr_t)s->ops[i].dst, (void *)(uintptr_t)s->ops[i].src, s->ops[i].n);
	}
	s->nops = 0;
}

// sync_device runs every stream's queued copies (what cuMemFree and
// cuMemUnmap imply); with blocking_only, only streams created without
// CU_STREAM_NON_BLOCKING (what a legacy-stream cuMemcpy waits for); mu held.
static void sync_device(int blocking_only) {
	for (struct stream *s = streams; s != NULL; s = s->next) {
		if (!blocking_only || !(s->flags & STREAM_NON_BLOCKING)) run_stream(s);
	}
}

static struct stream *find_stream(CUstream h) {
	for (struct stream *s = streams; s != NULL; s = s->next) {
		if (s == (struct stream *)h) return s;
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
	case CUDA_ERROR_NOT_FOUND: *s = "CUDA_ERROR_NOT_FOUND"; break;
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
	if (attr == env_int("FAKECUDA_NO_ATTR", -1)) return CUDA_ERROR_INVALID_VALUE;
	*v = 0;
	switch (attr) {
	case ATTR_DMA_BUF_SUPPORTED: *v = env_flag("FAKECUDA_NO_DMABUF") ? 0 : 1; break;
	case ATTR_GPU_DIRECT_RDMA_FLUSH_WRITES_OPTIONS: *v = env_int("FAKECUDA_RDMA_FLUSH_OPTIONS", FLUSH_OPTION_HOST); break;
	case ATTR_GPU_DIRECT_RDMA_WRITES_ORDERING: *v = env_int("FAKECUDA_RDMA_ORDERING", ORDERING_OWNER); break;
	case ATTR_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED: *v = 1; break;
	case ATTR_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED: *v = 1; break;
	}
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
	struct alloc *a = free_slot();
	if (a != NULL) {
		*a = (struct alloc){(CUdeviceptr)(uintptr_t)m, n, fd, NULL, 1, 0};
		pthread_mutex_unlock(&mu);
		*p = (CUdeviceptr)(uintptr_t)m;
		return CUDA_SUCCESS;
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
		// VMM memory is not cuMemFree's: cuMemUnmap and cuMemRelease it;
		// nor is an opened IPC handle's: cuIpcCloseMemHandle it.
		if (allocs[i].size != 0 && allocs[i].handle == NULL && !allocs[i].ipc && allocs[i].base == p) {
			sync_device(0);
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

// export_fd returns what stands in for a dmabuf of n bytes: an O_PATH
// descriptor of a memfd of that size. fstat reports the size; mmap fails.
static int export_fd(size_t n) {
	int m = memfd_create("fakecuda-dmabuf", MFD_CLOEXEC);
	if (m < 0) return -1;
	if (ftruncate(m, (off_t)n) != 0) {
		close(m);
		return -1;
	}
	char path[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", m);
	int fd = open(path, O_PATH | O_CLOEXEC);
	close(m);
	return fd;
}

CUresult cuMemGetHandleForAddressRange(void *handle, CUdeviceptr p, size_t n, int type, unsigned long long flags) {
	CHECK_CTX();
	long page = sysconf(_SC_PAGESIZE);
	if (type != 1 || flags != 0 || handle == NULL || n == 0) return CUDA_ERROR_INVALID_VALUE; // CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD
	if (env_flag("FAKECUDA_NO_DMABUF")) return CUDA_ERROR_NOT_SUPPORTED;
	pthread_mutex_lock(&mu);
	struct alloc *a = in_alloc(p, n);
	// VMM memory exports in whole granules, cuMemAlloc memory in pages.
	size_t align = (a != NULL && a->handle != NULL) ? GRANULARITY : (size_t)page;
	pthread_mutex_unlock(&mu);
	if (a == NULL || p % align != 0 || n % align != 0) return CUDA_ERROR_INVALID_VALUE;
	int fd = export_fd(n);
	if (fd < 0) return CUDA_ERROR_OUT_OF_MEMORY;
	*(int *)handle = fd;
	return CUDA_SUCCESS;
}

CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n) {
	CHECK_CTX();
	pthread_mutex_lock(&mu);
	sync_device(1);
	struct alloc *a = in_alloc(dst, n);
	pthread_mutex_unlock(&mu);
	if (!a) return CUDA_ERROR_INVALID_VALUE;
	memcpy((void *)(uintptr_t)dst, src, n);
	return CUDA_SUCCESS;
}

CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n) {
	CHECK_CTX();
	pthread_mutex_lock(&mu);
	sync_device(1);
	struct alloc *a = in_alloc(src, n);
	pthread_mutex_unlock(&mu);
	if (!a) return CUDA_ERROR_INVALID_VALUE;
	memcpy(dst, (void *)(uintptr_t)src, n);
	return CUDA_SUCCESS;
}

CUresult cuStreamCreate(CUstream *s, unsigned int flags) {
	CHECK_CTX();
	if (s == NULL || (flags & ~(unsigned int)STREAM_NON_BLOCKING) != 0) return CUDA_ERROR_INVALID_VALUE;
	struct stream *st = calloc(1, sizeof *st);
	if (!st) return CUDA_ERROR_OUT_OF_MEMORY;
	st->flags = flags;
	pthread_mutex_lock(&mu);
	st->next = streams;
	streams = st;
	pthread_mutex_unlock(&mu);
	*s = st;
	return CUDA_SUCCESS;
}

CUresult cuStreamDestroy_v2(CUstream s) {
	CHECK_CTX();
	pthread_mutex_lock(&mu);
	struct stream **pp = &streams;
	while (*pp != NULL && *pp != (struct stream *)s) pp = &(*pp)->next;
	if (*pp == NULL) {
		pthread_mutex_unlock(&mu);
		return CUDA_ERROR_INVALID_HANDLE;
	}
	struct stream *st = *pp;
	run_stream(st); // the device finishes the stream's work
	*pp = st->next;
	pthread_mutex_unlock(&mu);
	free(st->ops);
	free(st);
	return CUDA_SUCCESS;
}

CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s) {
	CHECK_CTX();
	pthread_mutex_lock(&mu);
	struct stream *st = find_stream(s);
	if (st == NULL) {
		pthread_mutex_unlock(&mu);
		return CUDA_ERROR_INVALID_HANDLE;
	}
	if (!in_alloc(dst, n) || !in_alloc(src, n)) {
		pthread_mutex_unlock(&mu);
		return CUDA_ERROR_INVALID_VALUE;
	}
	if (st->nops == st->cap) {
		size_t cap = st->cap ? 2 * st->cap : 64;
		struct op *ops = realloc(st->ops, cap * sizeof *ops);
		if (ops == NULL) {
			pthread_mutex_unlock(&mu);
			return CUDA_ERROR_OUT_OF_MEMORY;
		}
		st->ops = ops;
		st->cap = cap;
	}
	st->ops[st->nops++] = (struct op){dst, src, n}; // runs at the stream's next synchronization
	pthread_mutex_unlock(&mu);
	trace("dtod-async\n", 0, 0);
	return CUDA_SUCCESS;
}

CUresult cuStreamSynchronize(CUstream s) {
	CHECK_CTX();
	pthread_mutex_lock(&mu);
	struct stream *st = find_stream(s);
	if (st != NULL) run_stream(st);
	pthread_mutex_unlock(&mu);
	if (st == NULL) return CUDA_ERROR_INVALID_HANDLE;
	trace("stream-sync\n", 0, 0);
	return CUDA_SUCCESS;
}

CUresult cuFlushGPUDirectRDMAWrites(int target, int scope) {
	CHECK_CTX();
	if (target != FLUSH_TARGET_CURRENT_CTX || (scope != FLUSH_TO_OWNER && scope != FLUSH_TO_ALL_DEVICES)) return CUDA_ERROR_INVALID_VALUE;
	if (!(env_int("FAKECUDA_RDMA_FLUSH_OPTIONS", FLUSH_OPTION_HOST) & FLUSH_OPTION_HOST)) return CUDA_ERROR_NOT_SUPPORTED;
	trace("flush %d %d\n", target, scope);
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

// ---- Virtual memory management (cuMemCreate and friends) ----

static int valid_prop(const CUmemAllocationProp *prop) {
	return prop != NULL && prop->type == MEM_ALLOCATION_TYPE_PINNED && prop->location.type == MEM_LOCATION_TYPE_DEVICE &&
	       prop->location.id >= 0 && prop->location.id < device_count();
}

CUresult cuMemGetAllocationGranularity(size_t *g, const CUmemAllocationProp *prop, int option) {
	if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
	if (g == NULL || !valid_prop(prop) || (option != 0 && option != 1)) return CUDA_ERROR_INVALID_VALUE;
	*g = GRANULARITY;
	return CUDA_SUCCESS;
}

CUresult cuMemCreate(CUmemGenericAllocationHandle *h, size_t size, const CUmemAllocationProp *prop, unsigned long long flags) {
	if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
	if (h == NULL || flags != 0 || !valid_prop(prop) || size == 0 || size % GRANULARITY != 0) return CUDA_ERROR_INVALID_VALUE;
	if (size > TOTAL_MEM) return CUDA_ERROR_OUT_OF_MEMORY;
	struct vmm *v = calloc(1, sizeof *v);
	if (v == NULL) return CUDA_ERROR_OUT_OF_MEMORY;
	v->fd = memfd_create("fakecuda-vmm", MFD_CLOEXEC);
	if (v->fd < 0 || ftruncate(v->fd, (off_t)size) != 0) {
		if (v->fd >= 0) close(v->fd);
		free(v);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	v->magic = 0x7e77;
	v->size = size;
	v->refs = 1;
	v->handle_types = prop->requestedHandleTypes;
	*h = (CUmemGenericAllocationHandle)(uintptr_t)v;
	return CUDA_SUCCESS;
}

static struct vmm *vmm_of(CUmemGenericAllocationHandle h) {
	struct vmm *v = (struct vmm *)(uintptr_t)h;
	return v != NULL && v->magic == 0x7e77 && v->refs > 0 ? v : NULL;
}

// vmm_put frees a released handle once nothing maps it; mu held.
static void vmm_put(struct vmm *v) {
	if (v->refs == 0 && v->maps == 0) {
		close(v->fd);
		v->magic = 0;
		free(v);
	}
}

CUresult cuMemRelease(CUmemGenericAllocationHandle h) {
	if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
	pthread_mutex_lock(&mu);
	struct vmm *v = vmm_of(h);
	if (v != NULL) {
		v->refs--; // the memory lives on while mapped
		vmm_put(v);
	}
	pthread_mutex_unlock(&mu);
	return v != NULL ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

CUresult cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t alignment, CUdeviceptr addr, unsigned long long flags) {
	if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
	(void)addr; // a hint
	if (ptr == NULL || flags != 0 || size == 0 || size % GRANULARITY != 0 || (alignment & (alignment - 1)) != 0) return CUDA_ERROR_INVALID_VALUE;
	size_t align = alignment > GRANULARITY ? alignment : GRANULARITY;
	char *m = mmap(NULL, size + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
	uintptr_t base = ((uintptr_t)m + align - 1) & ~(uintptr_t)(align - 1);
	if (base > (uintptr_t)m) munmap(m, base - (uintptr_t)m);
	if ((uintptr_t)m + size + align > base + size) munmap((void *)(base + size), (uintptr_t)m + size + align - (base + size));
	pthread_mutex_lock(&mu);
	for (int i = 0; i < MAX_RESERVATIONS; i++) {
		if (reservations[i].size == 0) {
			reservations[i] = (struct reservation){base, size};
			pthread_mutex_unlock(&mu);
			*ptr = base;
			return CUDA_SUCCESS;
		}
	}
	pthread_mutex_unlock(&mu);
	munmap((void *)base, size);
	return CUDA_ERROR_OUT_OF_MEMORY;
}

// reserved reports whether [p, p+n) lies inside one reservation; mu held.
static int reserved(CUdeviceptr p, size_t n) {
	for (int i = 0; i < MAX_RESERVATIONS; i++) {
		struct reservation *r = &reservations[i];
		if (r->size != 0 && p >= r->base && n <= r->size && p - r->base <= r->size - n) return 1;
	}
	return 0;
}

// mapped reports whether any VMM mapping overlaps [p, p+n); mu held.
static int mapped(CUdeviceptr p, size_t n) {
	for (int i = 0; i < MAX_ALLOCS; i++) {
		struct alloc *a = &allocs[i];
		if (a->size != 0 && a->handle != NULL && p < a->base + a->size && a->base < p + n) return 1;
	}
	return 0;
}

CUresult cuMemAddressFree(CUdeviceptr p, size_t size) {
	if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
	pthread_mutex_lock(&mu);
	for (int i = 0; i < MAX_RESERVATIONS; i++) {
		struct reservation *r = &reservations[i];
		if (r->size != 0 && r->base == p && r->size == size && !mapped(p, size)) {
			r->size = 0;
			pthread_mutex_unlock(&mu);
			munmap((void *)(uintptr_t)p, size);
			return CUDA_SUCCESS;
		}
	}
	pthread_mutex_unlock(&mu);
	return CUDA_ERROR_INVALID_VALUE;
}

CUresult cuMemMap(CUdeviceptr p, size_t size, size_t offset, CUmemGenericAllocationHandle h, unsigned long long flags) {
	if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
	if (flags != 0 || size == 0 || p % GRANULARITY != 0 || size % GRANULARITY != 0 || offset % GRANULARITY != 0) return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&mu);
	struct vmm *v = vmm_of(h);
	struct alloc *a = free_slot();
	CUresult r = CUDA_SUCCESS;
	if (v == NULL) {
		r = CUDA_ERROR_INVALID_HANDLE;
	} else if (offset > v->size || size > v->size - offset || !reserved(p, size) || mapped(p, size)) {
		r = CUDA_ERROR_INVALID_VALUE;
	} else if (a == NULL || mmap((void *)(uintptr_t)p, size, PROT_NONE, MAP_SHARED | MAP_FIXED, v->fd, (off_t)offset) == MAP_FAILED) {
		r = CUDA_ERROR_OUT_OF_MEMORY;
	} else {
		*a = (struct alloc){p, size, -1, v, 0, 0}; // no access until cuMemSetAccess
		v->maps++;
	}
	pthread_mutex_unlock(&mu);
	return r;
}

// covered reports whether VMM mappings cover [p, p+n) exactly, none sticking
// out; mu held.
static int covered(CUdeviceptr p, size_t n) {
	size_t sum = 0;
	for (int i = 0; i < MAX_ALLOCS; i++) {
		struct alloc *a = &allocs[i];
		if (a->size == 0 || a->handle == NULL || a->base + a->size <= p || p + n <= a->base) continue;
		if (a->base < p || a->base + a->size > p + n) return 0;
		sum += a->size;
	}
	return sum == n;
}

CUresult cuMemSetAccess(CUdeviceptr p, size_t size, const CUmemAccessDesc *desc, size_t count) {
	if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
	if (desc == NULL || count == 0 || size == 0) return CUDA_ERROR_INVALID_VALUE;
	for (size_t i = 0; i < count; i++) {
		if (desc[i].location.type != MEM_LOCATION_TYPE_DEVICE || desc[i].location.id < 0 || desc[i].location.id >= device_count() ||
		    (desc[i].flags != MEM_ACCESS_FLAGS_PROT_READ && desc[i].flags != MEM_ACCESS_FLAGS_PROT_READWRITE)) {
			return CUDA_ERROR_INVALID_VALUE;
		}
		if (desc[i].flags != MEM_ACCESS_FLAGS_PROT_READWRITE) return CUDA_ERROR_NOT_SUPPORTED; // read-only access is not modelled
	}
	pthread_mutex_lock(&mu);
	if (!covered(p, size)) {
		pthread_mutex_unlock(&mu);
		return CUDA_ERROR_INVALID_VALUE;
	}
	if (mprotect((void *)(uintptr_t)p, size, PROT_READ | PROT_WRITE) != 0) {
		pthread_mutex_unlock(&mu);
		return CUDA_ERROR_INVALID_VALUE;
	}
	for (int i = 0; i < MAX_ALLOCS; i++) {
		struct alloc *a = &allocs[i];
		if (a->size != 0 && a->handle != NULL && a->base >= p && a->base - p < size) a->access = 1;
	}
	pthread_mutex_unlock(&mu);
	return CUDA_SUCCESS;
}

CUresult cuMemUnmap(CUdeviceptr p, size_t size) {
	if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
	if (size == 0 || p % GRANULARITY != 0 || size % GRANULARITY != 0) return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&mu);
	if (!covered(p, size)) {
		pthread_mutex_unlock(&mu);
		return CUDA_ERROR_INVALID_VALUE;
	}
	sync_device(0);
	for (int i = 0; i < MAX_ALLOCS; i++) {
		struct alloc *a = &allocs[i];
		if (a->size != 0 && a->handle != NULL && a->base >= p && a->base - p < size) {
			struct vmm *v = a->handle;
			a->size = 0;
			v->maps--;
			vmm_put(v);
		}
	}
	// Back to reserved, inaccessible address space.
	mmap((void *)(uintptr_t)p, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
	pthread_mutex_unlock(&mu);
	return CUDA_SUCCESS;
}

// ---- Sharing memory between processes ----

CUresult cuMemGetAddressRange_v2(CUdeviceptr *base, size_t *size, CUdeviceptr p) {
	CHECK_CTX();
	pthread_mutex_lock(&mu);
	CUresult r = CUDA_ERROR_NOT_FOUND;
	for (int i = 0; i < MAX_ALLOCS; i++) {
		struct alloc *a = &allocs[i];
		if (a->size != 0 && p >= a->base && p - a->base < a->size) {
			if (base != NULL) *base = a->base;
			if (size != NULL) *size = a->size;
			r = CUDA_SUCCESS;
			break;
		}
	}
	pthread_mutex_unlock(&mu);
	return r;
}

CUresult cuPointerGetAttribute(void *data, int attr, CUdeviceptr p) {
	enum { RANGE_START_ADDR = 11, RANGE_SIZE = 12 };
	if (data == NULL) return CUDA_ERROR_INVALID_VALUE;
	if (attr != RANGE_START_ADDR && attr != RANGE_SIZE) return CUDA_ERROR_NOT_SUPPORTED;
	CUdeviceptr base;
	size_t size;
	CUresult r = cuMemGetAddressRange_v2(&base, &size, p);
	if (r == CUDA_ERROR_NOT_FOUND) return CUDA_ERROR_INVALID_VALUE; // not device memory
	if (r != CUDA_SUCCESS) return r;
	if (attr == RANGE_START_ADDR) {
		*(CUdeviceptr *)data = base;
	} else {
		*(size_t *)data = size;
	}
	return CUDA_SUCCESS;
}

static const char ipc_magic[8] = {'B', 'X', 'F', 'A', 'K', 'I', 'P', 'C'};

CUresult cuIpcGetMemHandle(CUipcMemHandle *h, CUdeviceptr p) {
	CHECK_CTX();
	if (h == NULL) return CUDA_ERROR_INVALID_VALUE;
	struct ipc_handle ih = {0};
	struct stat st;
	pthread_mutex_lock(&mu);
	struct alloc *a = NULL;
	for (int i = 0; i < MAX_ALLOCS; i++) {
		// cuMemAlloc memory of this process, by its base address.
		if (allocs[i].size != 0 && allocs[i].handle == NULL && !allocs[i].ipc && allocs[i].base == p) a = &allocs[i];
	}
	if (a == NULL || fstat(a->fd, &st) != 0) {
		pthread_mutex_unlock(&mu);
		return CUDA_ERROR_INVALID_VALUE;
	}
	memcpy(ih.magic, ipc_magic, sizeof ih.magic);
	ih.pid = (int32_t)getpid();
	ih.fd = a->fd;
	ih.ino = (uint64_t)st.st_ino;
	ih.size = a->size;
	pthread_mutex_unlock(&mu);
	memset(h, 0, sizeof *h);
	memcpy(h->reserved, &ih, sizeof ih);
	return CUDA_SUCCESS;
}

CUresult cuIpcOpenMemHandle_v2(CUdeviceptr *p, CUipcMemHandle h, unsigned int flags) {
	CHECK_CTX();
	if (p == NULL || flags != IPC_MEM_LAZY_ENABLE_PEER_ACCESS) return CUDA_ERROR_INVALID_VALUE;
	struct ipc_handle ih;
	memcpy(&ih, h.reserved, sizeof ih);
	if (memcmp(ih.magic, ipc_magic, sizeof ih.magic) != 0 || ih.size == 0) return CUDA_ERROR_INVALID_VALUE;
	if (ih.pid == (int32_t)getpid()) return CUDA_ERROR_INVALID_CONTEXT; // as the driver: not in the exporting process
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)ih.pid, (int)ih.fd);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0) return CUDA_ERROR_INVALID_VALUE; // freed, or its owner exited
	struct stat st;
	char link[64] = {0};
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	if (fstat(fd, &st) != 0 || (uint64_t)st.st_ino != ih.ino || (uint64_t)st.st_size != ih.size ||
	    readlink(path, link, sizeof link - 1) < 0 || strncmp(link, "/memfd:fakecuda (deleted)", sizeof link) != 0) {
		close(fd); // the fd number now names another file: the memory was freed
		return CUDA_ERROR_INVALID_VALUE;
	}
	void *m = mmap(NULL, ih.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		close(fd);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	pthread_mutex_lock(&mu);
	struct alloc *a = free_slot();
	if (a != NULL) *a = (struct alloc){(CUdeviceptr)(uintptr_t)m, ih.size, fd, NULL, 1, 1};
	pthread_mutex_unlock(&mu);
	if (a == NULL) {
		munmap(m, ih.size);
		close(fd);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	*p = (CUdeviceptr)(uintptr_t)m;
	return CUDA_SUCCESS;
}

CUresult cuIpcCloseMemHandle(CUdeviceptr p) {
	CHECK_CTX();
	pthread_mutex_lock(&mu);
	for (int i = 0; i < MAX_ALLOCS; i++) {
		if (allocs[i].size != 0 && allocs[i].ipc && allocs[i].base == p) {
			sync_device(0);
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

CUresult cuMemExportToShareableHandle(void *out, CUmemGenericAllocationHandle h, int type, unsigned long long flags) {
	if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
	if (out == NULL || flags != 0 || type != MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&mu);
	struct vmm *v = vmm_of(h);
	int fd = -1;
	if (v != NULL && (v->handle_types & MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)) fd = fcntl(v->fd, F_DUPFD_CLOEXEC, 0);
	pthread_mutex_unlock(&mu);
	if (v == NULL) return CUDA_ERROR_INVALID_VALUE;
	if (fd < 0) return CUDA_ERROR_INVALID_VALUE; // not created shareable as a POSIX fd
	*(int *)out = fd;
	return CUDA_SUCCESS;
}

#ifndef FAKECUDA_NO_VMM_IMPORT
CUresult cuMemImportFromShareableHandle(CUmemGenericAllocationHandle *h, void *os_handle, int type) {
	if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
	if (h == NULL || type != MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) return CUDA_ERROR_INVALID_VALUE;
	int fd = (int)(intptr_t)os_handle;
	char path[64], link[64] = {0};
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	struct stat st;
	if (fstat(fd, &st) != 0 || readlink(path, link, sizeof link - 1) < 0 || strcmp(link, "/memfd:fakecuda-vmm (deleted)") != 0 ||
	    st.st_size <= 0 || (size_t)st.st_size % GRANULARITY != 0) {
		return CUDA_ERROR_INVALID_VALUE; // not an exported allocation
	}
	struct vmm *v = calloc(1, sizeof *v);
	if (v == NULL) return CUDA_ERROR_OUT_OF_MEMORY;
	v->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (v->fd < 0) {
		free(v);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	v->magic = 0x7e77;
	v->size = (size_t)st.st_size;
	v->refs = 1;
	v->handle_types = MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
	*h = (CUmemGenericAllocationHandle)(uintptr_t)v;
	return CUDA_SUCCESS;
}
#endif

CUresult cuMemRetainAllocationHandle(CUmemGenericAllocationHandle *h, void *addr) {
	if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
	if (h == NULL) return CUDA_ERROR_INVALID_VALUE;
	CUdeviceptr p = (CUdeviceptr)(uintptr_t)addr;
	pthread_mutex_lock(&mu);
	for (int i = 0; i < MAX_ALLOCS; i++) {
		struct alloc *a = &allocs[i];
		if (a->size != 0 && a->handle != NULL && p >= a->base && p - a->base < a->size) {
			a->handle->refs++;
			*h = (CUmemGenericAllocationHandle)(uintptr_t)a->handle;
			pthread_mutex_unlock(&mu);
			return CUDA_SUCCESS;
		}
	}
	pthread_mutex_unlock(&mu);
	return CUDA_ERROR_INVALID_VALUE;
}
