// fakecuda_check.c: checks that the stand-in driver (fakecuda.c) fails where
// the real CUDA driver does, so the gpu provider's tests cannot pass on
// calls a GPU would reject. TestStandIn builds and runs it:
//
//	fakecuda_check /path/to/libfakecuda.so
//
// It prints one line per check ("ok NAME" or "FAIL NAME: why") and exits 1
// if any failed.
//
// The VMM checks document a constraint for callers that hand the engine
// memory they allocated themselves (PyTorch's expandable segments use
// cuMemCreate + cuMemMap): cuMemGetHandleForAddressRange exports such memory
// only in ranges aligned to the allocation granularity (2 MiB), not to the
// page, so a tensor's sub-range must be widened to whole granules (and the
// NIC bound at the offset within) before it can be exported.
//
// The IPC checks fork: a handle opens only in a process other than its
// owner's (the child), and the child's writes must be the owner's bytes.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../cudatypes.h"

enum { OK = 0, INVALID_VALUE = 1, INVALID_CONTEXT = 201, NOT_FOUND = 500, NOT_SUPPORTED = 801 };

static void *lib;
static int failures;

static void *sym(const char *name) {
	void *p = dlsym(lib, name);
	if (p == NULL) {
		printf("FAIL symbols: %s missing\n", name);
		exit(1);
	}
	return p;
}

#define DECL(ret, name, args) static ret(*name) args
DECL(CUresult, cuInit, (unsigned int));
DECL(CUresult, cuDevicePrimaryCtxRetain, (CUcontext *, CUdevice));
DECL(CUresult, cuCtxSetCurrent, (CUcontext));
DECL(CUresult, cuMemAlloc, (CUdeviceptr *, size_t));
DECL(CUresult, cuMemFree, (CUdeviceptr));
DECL(CUresult, cuMemGetHandleForAddressRange, (void *, CUdeviceptr, size_t, int, unsigned long long));
DECL(CUresult, cuMemcpyHtoD, (CUdeviceptr, const void *, size_t));
DECL(CUresult, cuMemcpyDtoH, (void *, CUdeviceptr, size_t));
DECL(CUresult, cuMemcpyDtoDAsync, (CUdeviceptr, CUdeviceptr, size_t, CUstream));
DECL(CUresult, cuStreamCreate, (CUstream *, unsigned int));
DECL(CUresult, cuStreamDestroy, (CUstream));
DECL(CUresult, cuStreamSynchronize, (CUstream));
DECL(CUresult, cuFlushGPUDirectRDMAWrites, (int, int));
DECL(CUresult, cuMemGetAllocationGranularity, (size_t *, const CUmemAllocationProp *, int));
DECL(CUresult, cuMemCreate, (CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *, unsigned long long));
DECL(CUresult, cuMemRelease, (CUmemGenericAllocationHandle));
DECL(CUresult, cuMemAddressReserve, (CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long));
DECL(CUresult, cuMemAddressFree, (CUdeviceptr, size_t));
DECL(CUresult, cuMemMap, (CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long));
DECL(CUresult, cuMemUnmap, (CUdeviceptr, size_t));
DECL(CUresult, cuMemSetAccess, (CUdeviceptr, size_t, const CUmemAccessDesc *, size_t));
DECL(CUresult, cuMemGetAddressRange, (CUdeviceptr *, size_t *, CUdeviceptr));
DECL(CUresult, cuIpcGetMemHandle, (CUipcMemHandle *, CUdeviceptr));
DECL(CUresult, cuPointerGetAttribute, (void *, int, CUdeviceptr));
DECL(CUresult, cuIpcOpenMemHandle, (CUdeviceptr *, CUipcMemHandle, unsigned int));
DECL(CUresult, cuIpcCloseMemHandle, (CUdeviceptr));
DECL(CUresult, cuMemExportToShareableHandle, (void *, CUmemGenericAllocationHandle, int, unsigned long long));
DECL(CUresult, cuMemImportFromShareableHandle, (CUmemGenericAllocationHandle *, void *, int));
DECL(CUresult, cuMemRetainAllocationHandle, (CUmemGenericAllocationHandle *, void *));

#define LOAD(name, symbol) *(void **)(&name) = sym(symbol)

// expect records a check of a driver call's result.
static void expect(const char *name, CUresult got, CUresult want) {
	if (got == want) {
		printf("ok %s\n", name);
	} else {
		printf("FAIL %s: CUresult %d, want %d\n", name, got, want);
		failures++;
	}
}

static void check(const char *name, int cond, const char *why) {
	if (cond) {
		printf("ok %s\n", name);
	} else {
		printf("FAIL %s: %s\n", name, why);
		failures++;
	}
}

static int export(CUdeviceptr p, size_t n, CUresult *r) {
	int fd = -1;
	*r = cuMemGetHandleForAddressRange(&fd, p, n, 1 /* CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD */, 0);
	return fd;
}

// checkExport: a dmabuf of cuMemAlloc memory reports its size but cannot be
// mapped, like the NVIDIA exporter's.
static void checkExport(void) {
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	CUdeviceptr p;
	expect("alloc", cuMemAlloc(&p, 4 * page), OK);
	CUresult r;
	int fd = export(p, 4 * page, &r);
	expect("export cuMemAlloc memory", r, OK);
	struct stat st;
	check("exported dmabuf has the range's size", fstat(fd, &st) == 0 && (size_t)st.st_size == 4 * page, "fstat size differs");
	void *m = mmap(NULL, 4 * page, PROT_READ, MAP_SHARED, fd, 0);
	check("exported dmabuf refuses mmap", m == MAP_FAILED, "mmap of the dmabuf succeeded");
	if (m != MAP_FAILED) munmap(m, 4 * page);
	close(fd);
	fd = export(p + page, 2 * page, &r);
	expect("export a page-aligned sub-range of cuMemAlloc memory", r, OK);
	close(fd);
	export(p + 100, page, &r);
	expect("export an unaligned range of cuMemAlloc memory", r, INVALID_VALUE);
	expect("free", cuMemFree(p), OK);
}

// checkAsync: an async copy lands at the stream's synchronization, not
// before; a synchronous read-back does not wait for a non-blocking stream.
static void checkAsync(void) {
	CUdeviceptr a, b;
	cuMemAlloc(&a, 4096);
	cuMemAlloc(&b, 4096);
	char src[4096], got[4096];
	memset(src, 0x5a, sizeof src);
	cuMemcpyHtoD(a, src, sizeof src);
	CUstream s;
	expect("stream create", cuStreamCreate(&s, 1 /* CU_STREAM_NON_BLOCKING */), OK);
	expect("async copy queued", cuMemcpyDtoDAsync(b, a, 4096, s), OK);
	cuMemcpyDtoH(got, b, sizeof got);
	check("async copy not done before the stream is synchronized", got[0] == 0 && got[4095] == 0, "bytes landed at once");
	expect("stream sync", cuStreamSynchronize(s), OK);
	cuMemcpyDtoH(got, b, sizeof got);
	check("async copy done after the stream is synchronized", memcmp(got, src, sizeof got) == 0, "bytes missing after sync");
	expect("async copy outside an allocation", cuMemcpyDtoDAsync(b + 4000, a, 4096, s), INVALID_VALUE);
	expect("stream destroy", cuStreamDestroy(s), OK);
	expect("sync of a destroyed stream", cuStreamSynchronize(s), 400 /* CUDA_ERROR_INVALID_HANDLE */);
	cuMemFree(a);
	cuMemFree(b);
}

// checkFlush: cuFlushGPUDirectRDMAWrites takes the current context, the
// owner or all-devices scope, and the host flush option.
static void checkFlush(void) {
	expect("flush to owner", cuFlushGPUDirectRDMAWrites(0, 100), OK);
	expect("flush to all devices", cuFlushGPUDirectRDMAWrites(0, 200), OK);
	expect("flush with a bad scope", cuFlushGPUDirectRDMAWrites(0, 1), INVALID_VALUE);
	expect("flush with a bad target", cuFlushGPUDirectRDMAWrites(1, 100), INVALID_VALUE);
	setenv("FAKECUDA_RDMA_FLUSH_OPTIONS", "2", 1); // MEMOPS only
	expect("flush without the host option", cuFlushGPUDirectRDMAWrites(0, 100), NOT_SUPPORTED);
	unsetenv("FAKECUDA_RDMA_FLUSH_OPTIONS");
	cuCtxSetCurrent(NULL);
	expect("flush without a current context", cuFlushGPUDirectRDMAWrites(0, 100), 201 /* CUDA_ERROR_INVALID_CONTEXT */);
}

// checkVMM: memory from cuMemCreate + cuMemMap exports only in whole
// allocation granules.
static void checkVMM(void) {
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	CUmemAllocationProp prop = {.type = 1 /* PINNED */, .location = {1 /* DEVICE */, 0}};
	size_t g = 0;
	expect("granularity", cuMemGetAllocationGranularity(&g, &prop, 0), OK);
	check("granularity is 2 MiB", g == 2 << 20, "granularity differs");
	CUmemGenericAllocationHandle h;
	expect("cuMemCreate of a non-multiple of the granularity", cuMemCreate(&h, g + page, &prop, 0), INVALID_VALUE);
	expect("cuMemCreate", cuMemCreate(&h, 2 * g, &prop, 0), OK);
	CUdeviceptr va;
	expect("cuMemAddressReserve", cuMemAddressReserve(&va, 2 * g, 0, 0, 0), OK);
	check("reservation is granule-aligned", va % g == 0, "unaligned reservation");
	expect("cuMemMap at an unaligned address", cuMemMap(va + page, g, 0, h, 0), INVALID_VALUE);
	expect("cuMemMap", cuMemMap(va, 2 * g, 0, h, 0), OK);
	char buf[64] = "vmm bytes";
	expect("copy before cuMemSetAccess", cuMemcpyHtoD(va, buf, sizeof buf), INVALID_VALUE);
	CUmemAccessDesc access = {.location = {1, 0}, .flags = 3 /* PROT_READWRITE */};
	expect("cuMemSetAccess", cuMemSetAccess(va, 2 * g, &access, 1), OK);
	expect("copy into VMM memory", cuMemcpyHtoD(va + g + 10, buf, sizeof buf), OK);
	char got[64] = {0};
	cuMemcpyDtoH(got, va + g + 10, sizeof got);
	check("copy out of VMM memory", strcmp(got, "vmm bytes") == 0, "bytes differ");
	expect("cuMemFree of VMM memory", cuMemFree(va), INVALID_VALUE);

	CUresult r;
	int fd = export(va, 2 * g, &r);
	expect("export a whole VMM mapping", r, OK);
	close(fd);
	fd = export(va + g, g, &r);
	expect("export a granule-aligned VMM sub-range", r, OK);
	close(fd);
	export(va + page, g, &r);
	expect("export a page-aligned, not granule-aligned, VMM start", r, INVALID_VALUE);
	export(va, g + page, &r);
	expect("export a page-multiple, not granule-multiple, VMM length", r, INVALID_VALUE);

	expect("cuMemUnmap", cuMemUnmap(va, 2 * g), OK);
	expect("cuMemRelease", cuMemRelease(h), OK);
	expect("cuMemAddressFree", cuMemAddressFree(va, 2 * g), OK);
}

// child runs fn in a forked process (which has the same context current)
// and returns its exit status: the number of failed checks, printed by the
// child itself.
static int child(int (*fn)(CUipcMemHandle, int, int), CUipcMemHandle h, int rfd, int wfd) {
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		int n = fn(h, rfd, wfd);
		fflush(stdout);
		_exit(n);
	}
	int status = 0;
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return 1;
	return WEXITSTATUS(status);
}

// ipcWriter opens the handle in another process, checks the range it gets
// and writes "written by the importer" at offset 100.
static int ipcWriter(CUipcMemHandle h, int rfd, int wfd) {
	(void)rfd, (void)wfd;
	CUdeviceptr p;
	expect("open an IPC handle without LAZY_ENABLE_PEER_ACCESS", cuIpcOpenMemHandle(&p, h, 0), INVALID_VALUE);
	expect("open an IPC handle in another process", cuIpcOpenMemHandle(&p, h, 1), OK);
	CUdeviceptr base = 0;
	size_t size = 0;
	expect("address range of the opened memory", cuMemGetAddressRange(&base, &size, p + 5000), OK);
	check("the opened memory is the whole allocation", base == p && size == 3 * 4096, "other range");
	expect("copy into the opened memory", cuMemcpyHtoD(p + 100, "written by the importer", 24), OK);
	expect("copy past the opened memory", cuMemcpyHtoD(p + 3 * 4096 - 10, "0123456789abcdef", 16), INVALID_VALUE);
	expect("cuMemFree of opened memory", cuMemFree(p), INVALID_VALUE);
	expect("close the IPC handle", cuIpcCloseMemHandle(p), OK);
	expect("close it twice", cuIpcCloseMemHandle(p), INVALID_VALUE);
	return failures;
}

// ipcHolder opens the handle, tells the owner (wfd), waits for it to free
// the memory (rfd), and reads the bytes: memory open in an importer
// outlives the owner's cuMemFree.
static int ipcHolder(CUipcMemHandle h, int rfd, int wfd) {
	CUdeviceptr p;
	expect("open before the owner frees", cuIpcOpenMemHandle(&p, h, 1), OK);
	char c = 1;
	if (write(wfd, &c, 1) != 1 || read(rfd, &c, 1) != 1) return failures + 1;
	char got[24] = {0};
	expect("read opened memory after the owner freed it", cuMemcpyDtoH(got, p + 100, sizeof got), OK);
	check("opened memory keeps its bytes after the owner frees it", strcmp(got, "written by the importer") == 0, "bytes differ");
	expect("close after the owner freed", cuIpcCloseMemHandle(p), OK);
	return failures;
}

// ipcOpenFails: a handle of freed memory does not open.
static int ipcOpenFails(CUipcMemHandle h, int rfd, int wfd) {
	(void)rfd, (void)wfd;
	CUdeviceptr p;
	expect("open a handle of freed memory", cuIpcOpenMemHandle(&p, h, 1), INVALID_VALUE);
	return failures;
}

// checkIPC: cuMemAlloc memory opens in another process by its 64-byte
// handle, and the importer's writes are the owner's bytes.
static void checkIPC(void) {
	CUdeviceptr p;
	expect("alloc for IPC", cuMemAlloc(&p, 3 * 4096), OK);
	CUipcMemHandle h;
	expect("IPC handle of a cuMemAlloc base", cuIpcGetMemHandle(&h, p), OK);
	CUipcMemHandle inner;
	expect("IPC handle of an interior pointer (stand-in: refused)", cuIpcGetMemHandle(&inner, p + 4096), INVALID_VALUE);
	CUdeviceptr q;
	expect("open an IPC handle in its owner's process", cuIpcOpenMemHandle(&q, h, 1), INVALID_CONTEXT);
	CUdeviceptr base = 0;
	size_t size = 0;
	expect("address range of an interior pointer", cuMemGetAddressRange(&base, &size, p + 4097), OK);
	check("address range is the allocation", base == p && size == 3 * 4096, "other range");
	expect("address range outside any allocation", cuMemGetAddressRange(&base, &size, 8), NOT_FOUND);
	CUdeviceptr start = 0;
	size_t rsize = 0;
	expect("range start attribute", cuPointerGetAttribute(&start, 11 /* RANGE_START_ADDR */, p + 4097), OK);
	expect("range size attribute", cuPointerGetAttribute(&rsize, 12 /* RANGE_SIZE */, p + 4097), OK);
	check("range attributes are the allocation", start == p && rsize == 3 * 4096, "other range");
	expect("range attribute of host memory", cuPointerGetAttribute(&start, 11, (CUdeviceptr)(uintptr_t)&start), INVALID_VALUE);

	int failed = child(ipcWriter, h, -1, -1);
	check("importer checks", failed == 0, "the importing process failed checks");
	char got[24] = {0};
	cuMemcpyDtoH(got, p + 100, sizeof got);
	check("the importer's bytes are the owner's", strcmp(got, "written by the importer") == 0, "bytes differ");

	int toChild[2], toParent[2];
	if (pipe(toChild) != 0 || pipe(toParent) != 0) {
		check("pipe", 0, strerror(errno));
		return;
	}
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		_exit(ipcHolder(h, toChild[0], toParent[1]));
	}
	char c;
	check("holder opened", read(toParent[0], &c, 1) == 1, "no word from the holder");
	expect("owner frees memory open elsewhere", cuMemFree(p), OK);
	check("tell the holder", write(toChild[1], &c, 1) == 1, "write");
	int status = 1;
	waitpid(pid, &status, 0);
	check("holder checks", WIFEXITED(status) && WEXITSTATUS(status) == 0, "the holding process failed checks");
	close(toChild[0]), close(toChild[1]), close(toParent[0]), close(toParent[1]);

	failed = child(ipcOpenFails, h, -1, -1);
	check("freed-handle checks", failed == 0, "a handle of freed memory opened");
}

// checkVMMShare: VMM memory is shared as a POSIX fd only when created
// with that handle type, and an imported handle maps the same bytes.
static void checkVMMShare(void) {
	size_t g = 2 << 20;
	CUmemAllocationProp prop = {.type = 1, .location = {1, 0}};
	CUmemGenericAllocationHandle plain, h, imported, retained;
	expect("cuMemCreate without a shareable type", cuMemCreate(&plain, g, &prop, 0), OK);
	int fd = -1;
	expect("export memory not created shareable", cuMemExportToShareableHandle(&fd, plain, 1, 0), INVALID_VALUE);
	CUipcMemHandle ih;
	CUdeviceptr va;
	cuMemAddressReserve(&va, g, 0, 0, 0);
	cuMemMap(va, g, 0, plain, 0);
	CUmemAccessDesc access = {.location = {1, 0}, .flags = 3};
	cuMemSetAccess(va, g, &access, 1);
	expect("IPC handle of VMM memory", cuIpcGetMemHandle(&ih, va), INVALID_VALUE);
	expect("retain the handle of mapped memory", cuMemRetainAllocationHandle(&retained, (void *)(uintptr_t)(va + 4096)), OK);
	check("retained handle is the created one", retained == plain, "other handle");
	expect("release the retained handle", cuMemRelease(retained), OK);
	cuMemUnmap(va, g);
	cuMemRelease(plain);
	cuMemAddressFree(va, g);

	prop.requestedHandleTypes = 1; // CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR
	expect("cuMemCreate shareable as a POSIX fd", cuMemCreate(&h, 2 * g, &prop, 0), OK);
	expect("export as a POSIX fd", cuMemExportToShareableHandle(&fd, h, 1, 0), OK);
	expect("export as another type", cuMemExportToShareableHandle(&fd, h, 2, 0), INVALID_VALUE);
	expect("import the fd", cuMemImportFromShareableHandle(&imported, (void *)(uintptr_t)fd, 1), OK);
	close(fd);
	int memfd = memfd_create("not-cuda", MFD_CLOEXEC);
	if (memfd >= 0 && ftruncate(memfd, (off_t)g) == 0) {
		CUmemGenericAllocationHandle bad;
		expect("import an fd no driver exported", cuMemImportFromShareableHandle(&bad, (void *)(uintptr_t)memfd, 1), INVALID_VALUE);
	}
	if (memfd >= 0) close(memfd);
	CUdeviceptr a, b;
	cuMemAddressReserve(&a, 2 * g, 0, 0, 0);
	cuMemAddressReserve(&b, 2 * g, 0, 0, 0);
	expect("map the created handle", cuMemMap(a, 2 * g, 0, h, 0), OK);
	expect("map the imported handle", cuMemMap(b, 2 * g, 0, imported, 0), OK);
	cuMemSetAccess(a, 2 * g, &access, 1);
	cuMemSetAccess(b, 2 * g, &access, 1);
	expect("release the imported handle while mapped", cuMemRelease(imported), OK);
	expect("write through the imported mapping", cuMemcpyHtoD(b + g + 7, "shared vmm", 11), OK);
	char got[11] = {0};
	cuMemcpyDtoH(got, a + g + 7, sizeof got);
	check("the imported mapping is the same memory", strcmp(got, "shared vmm") == 0, "bytes differ");
	CUdeviceptr base = 0;
	size_t size = 0;
	expect("address range in a VMM mapping", cuMemGetAddressRange(&base, &size, b + g), OK);
	check("address range is the mapping", base == b && size == 2 * g, "other range");
	expect("unmap the imported handle", cuMemUnmap(b, 2 * g), OK);
	cuMemAddressFree(b, 2 * g);
	cuMemcpyDtoH(got, a + g + 7, sizeof got);
	check("the owner's memory outlives the import", strcmp(got, "shared vmm") == 0, "bytes differ");
	cuMemUnmap(a, 2 * g);
	cuMemRelease(h);
	cuMemAddressFree(a, 2 * g);
}

int main(int argc, char **argv) {
	if (argc != 2) {
		fprintf(stderr, "usage: fakecuda_check libfakecuda.so\n");
		return 2;
	}
	lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (lib == NULL) {
		printf("FAIL dlopen: %s\n", dlerror());
		return 1;
	}
	LOAD(cuInit, "cuInit");
	LOAD(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
	LOAD(cuCtxSetCurrent, "cuCtxSetCurrent");
	LOAD(cuMemAlloc, "cuMemAlloc_v2");
	LOAD(cuMemFree, "cuMemFree_v2");
	LOAD(cuMemGetHandleForAddressRange, "cuMemGetHandleForAddressRange");
	LOAD(cuMemcpyHtoD, "cuMemcpyHtoD_v2");
	LOAD(cuMemcpyDtoH, "cuMemcpyDtoH_v2");
	LOAD(cuMemcpyDtoDAsync, "cuMemcpyDtoDAsync_v2");
	LOAD(cuStreamCreate, "cuStreamCreate");
	LOAD(cuStreamDestroy, "cuStreamDestroy_v2");
	LOAD(cuStreamSynchronize, "cuStreamSynchronize");
	LOAD(cuFlushGPUDirectRDMAWrites, "cuFlushGPUDirectRDMAWrites");
	LOAD(cuMemGetAllocationGranularity, "cuMemGetAllocationGranularity");
	LOAD(cuMemCreate, "cuMemCreate");
	LOAD(cuMemRelease, "cuMemRelease");
	LOAD(cuMemAddressReserve, "cuMemAddressReserve");
	LOAD(cuMemAddressFree, "cuMemAddressFree");
	LOAD(cuMemMap, "cuMemMap");
	LOAD(cuMemUnmap, "cuMemUnmap");
	LOAD(cuMemSetAccess, "cuMemSetAccess");
	LOAD(cuMemGetAddressRange, "cuMemGetAddressRange_v2");
	LOAD(cuIpcGetMemHandle, "cuIpcGetMemHandle");
	LOAD(cuPointerGetAttribute, "cuPointerGetAttribute");
	LOAD(cuIpcOpenMemHandle, "cuIpcOpenMemHandle_v2");
	LOAD(cuIpcCloseMemHandle, "cuIpcCloseMemHandle");
	LOAD(cuMemExportToShareableHandle, "cuMemExportToShareableHandle");
	LOAD(cuMemImportFromShareableHandle, "cuMemImportFromShareableHandle");
	LOAD(cuMemRetainAllocationHandle, "cuMemRetainAllocationHandle");

	CUcontext ctx;
	if (cuInit(0) != OK || cuDevicePrimaryCtxRetain(&ctx, 0) != OK || cuCtxSetCurrent(ctx) != OK) {
		printf("FAIL init\n");
		return 1;
	}
	checkExport();
	checkAsync();
	checkVMM();
	checkIPC();
	checkVMMShare();
	checkFlush(); // last: it clears the current context
	return failures ? 1 : 0;
}
