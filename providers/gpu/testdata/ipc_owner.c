// ipc_owner.c: a process that owns CUDA memory and shares it, for the gpu
// provider's import tests (the plugin must import memory of another
// process, as it would a Python client's tensors).
//
//	ipc_owner /path/to/libcuda.so
//
// It reads commands on stdin, one per line, and answers each on stdout with
// one line, "ok ..." or "err CUDA_ERROR_..." (raw bytes follow "ok data"):
//
//	alloc N        cuMemAlloc N bytes, zeroed:  ok ipc <128 hex digits of the IPC handle>
//	vmm N          cuMemCreate N bytes shareable as a POSIX fd (N a multiple of
//	               the granularity), mapped and zeroed; the exported fd is sent
//	               on fd 3 (a unix socket) with SCM_RIGHTS:  ok fd
//	write OFF N    then N raw bytes on stdin, copied into the memory at OFF:  ok
//	read OFF N     ok data, then N raw bytes of the memory at OFF
//	free           free (or unmap and release) the memory:  ok
//
// One allocation at a time. It exits at end of input.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../cudatypes.h"

static void *lib;
#define DECL(ret, name, args) static ret(*name) args
DECL(CUresult, cuInit, (unsigned int));
DECL(CUresult, cuGetErrorName, (CUresult, const char **));
DECL(CUresult, cuDevicePrimaryCtxRetain, (CUcontext *, CUdevice));
DECL(CUresult, cuCtxSetCurrent, (CUcontext));
DECL(CUresult, cuMemAlloc, (CUdeviceptr *, size_t));
DECL(CUresult, cuMemFree, (CUdeviceptr));
DECL(CUresult, cuMemcpyHtoD, (CUdeviceptr, const void *, size_t));
DECL(CUresult, cuMemcpyDtoH, (void *, CUdeviceptr, size_t));
DECL(CUresult, cuIpcGetMemHandle, (CUipcMemHandle *, CUdeviceptr));
DECL(CUresult, cuMemCreate, (CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *, unsigned long long));
DECL(CUresult, cuMemRelease, (CUmemGenericAllocationHandle));
DECL(CUresult, cuMemAddressReserve, (CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long));
DECL(CUresult, cuMemAddressFree, (CUdeviceptr, size_t));
DECL(CUresult, cuMemMap, (CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long));
DECL(CUresult, cuMemUnmap, (CUdeviceptr, size_t));
DECL(CUresult, cuMemSetAccess, (CUdeviceptr, size_t, const CUmemAccessDesc *, size_t));
DECL(CUresult, cuMemExportToShareableHandle, (void *, CUmemGenericAllocationHandle, int, unsigned long long));

static void load(void **field, const char *name) {
	if ((*field = dlsym(lib, name)) == NULL) {
		fprintf(stderr, "ipc_owner: %s missing\n", name);
		exit(2);
	}
}
#define LOAD(name, symbol) load((void **)&name, symbol)

static CUdeviceptr mem;
static size_t size;
static CUmemGenericAllocationHandle vmm; // 0: mem is cuMemAlloc memory

// fail answers with the error's name; it returns 1 if r is an error.
static int fail(CUresult r) {
	if (r == 0) return 0;
	const char *s = "CUDA_ERROR";
	cuGetErrorName(r, &s);
	printf("err %s\n", s);
	return 1;
}

static int zero(void) {
	char *z = calloc(1, size);
	CUresult r = z ? cuMemcpyHtoD(mem, z, size) : 2;
	free(z);
	return fail(r);
}

// sendfd sends fd on the socket at fd 3.
static int sendfd(int fd) {
	char byte = 'F';
	struct iovec iov = {&byte, 1};
	char ctl[CMSG_SPACE(sizeof(int))];
	memset(ctl, 0, sizeof ctl);
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof fd);
	return sendmsg(3, &msg, 0) == 1 ? 0 : -1;
}

static void command(char *line) {
	unsigned long long a = 0, b = 0;
	if (sscanf(line, "alloc %llu", &a) == 1) {
		size = a;
		CUipcMemHandle h;
		if (fail(cuMemAlloc(&mem, size)) || zero() || fail(cuIpcGetMemHandle(&h, mem))) return;
		printf("ok ipc ");
		for (size_t i = 0; i < sizeof h.reserved; i++) printf("%02x", (unsigned char)h.reserved[i]);
		printf("\n");
	} else if (sscanf(line, "vmm %llu", &a) == 1) {
		size = a;
		CUmemAllocationProp prop = {.type = 1, .requestedHandleTypes = 1 /* POSIX fd */, .location = {1, 0}};
		CUmemAccessDesc access = {.location = {1, 0}, .flags = 3};
		int fd = -1;
		if (fail(cuMemCreate(&vmm, size, &prop, 0)) || fail(cuMemAddressReserve(&mem, size, 0, 0, 0)) ||
		    fail(cuMemMap(mem, size, 0, vmm, 0)) || fail(cuMemSetAccess(mem, size, &access, 1)) || zero() ||
		    fail(cuMemExportToShareableHandle(&fd, vmm, 1, 0))) {
			return;
		}
		int sent = sendfd(fd);
		close(fd);
		printf(sent == 0 ? "ok fd\n" : "err sendmsg\n");
	} else if (sscanf(line, "write %llu %llu", &a, &b) == 2) {
		char *p = malloc(b ? b : 1);
		if (p == NULL || fread(p, 1, b, stdin) != b) {
			printf("err short write\n");
		} else if (!fail(cuMemcpyHtoD(mem + a, p, b))) {
			printf("ok\n");
		}
		free(p);
	} else if (sscanf(line, "read %llu %llu", &a, &b) == 2) {
		char *p = malloc(b ? b : 1);
		if (p != NULL && !fail(cuMemcpyDtoH(p, mem + a, b))) {
			printf("ok data\n");
			fwrite(p, 1, b, stdout);
		}
		free(p);
	} else if (strcmp(line, "free\n") == 0) {
		if (vmm == 0) {
			if (fail(cuMemFree(mem))) return;
		} else if (fail(cuMemUnmap(mem, size)) || fail(cuMemRelease(vmm)) || fail(cuMemAddressFree(mem, size))) {
			return;
		}
		vmm = 0;
		printf("ok\n");
	} else {
		printf("err unknown command\n");
	}
}

int main(int argc, char **argv) {
	if (argc != 2) {
		fprintf(stderr, "usage: ipc_owner libcuda.so\n");
		return 2;
	}
	if ((lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL)) == NULL) {
		fprintf(stderr, "ipc_owner: %s\n", dlerror());
		return 2;
	}
	LOAD(cuInit, "cuInit");
	LOAD(cuGetErrorName, "cuGetErrorName");
	LOAD(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
	LOAD(cuCtxSetCurrent, "cuCtxSetCurrent");
	LOAD(cuMemAlloc, "cuMemAlloc_v2");
	LOAD(cuMemFree, "cuMemFree_v2");
	LOAD(cuMemcpyHtoD, "cuMemcpyHtoD_v2");
	LOAD(cuMemcpyDtoH, "cuMemcpyDtoH_v2");
	LOAD(cuIpcGetMemHandle, "cuIpcGetMemHandle");
	LOAD(cuMemCreate, "cuMemCreate");
	LOAD(cuMemRelease, "cuMemRelease");
	LOAD(cuMemAddressReserve, "cuMemAddressReserve");
	LOAD(cuMemAddressFree, "cuMemAddressFree");
	LOAD(cuMemMap, "cuMemMap");
	LOAD(cuMemUnmap, "cuMemUnmap");
	LOAD(cuMemSetAccess, "cuMemSetAccess");
	LOAD(cuMemExportToShareableHandle, "cuMemExportToShareableHandle");
	CUcontext ctx;
	if (cuInit(0) != 0 || cuDevicePrimaryCtxRetain(&ctx, 0) != 0 || cuCtxSetCurrent(ctx) != 0) {
		fprintf(stderr, "ipc_owner: no CUDA context\n");
		return 2;
	}
	char line[256];
	while (fgets(line, sizeof line, stdin) != NULL) {
		command(line);
		fflush(stdout);
	}
	return 0;
}
