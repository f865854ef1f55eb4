//go:build linux && cgo

package main

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

// The few CUDA driver API types used (cudatypes.h) and entry points,
// declared here so no CUDA header or toolkit is needed. Versioned names
// (_v2) are the ones cuda.h maps the plain names to.
#include "cudatypes.h"

enum {
	BX_CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_FLUSH_WRITES_OPTIONS = 117,
	BX_CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_WRITES_ORDERING = 118,
	BX_CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED = 102,
	BX_CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED = 103,
	BX_CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED = 124,
	BX_CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD = 1,
	BX_CU_STREAM_NON_BLOCKING = 1,
	BX_CU_FLUSH_GPU_DIRECT_RDMA_WRITES_TARGET_CURRENT_CTX = 0,
	BX_CU_FLUSH_GPU_DIRECT_RDMA_WRITES_TO_OWNER = 100,
	BX_CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS = 1,
	BX_CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR = 1,
	BX_CU_MEM_ALLOCATION_TYPE_PINNED = 1,
	BX_CU_MEM_LOCATION_TYPE_DEVICE = 1,
	BX_CU_MEM_ACCESS_FLAGS_PROT_READWRITE = 3,
	BX_CU_MEM_ALLOC_GRANULARITY_MINIMUM = 0,
};

// Which step of bx_vmm_import failed.
enum { BX_VMM_OK, BX_VMM_IMPORT, BX_VMM_GRANULARITY, BX_VMM_RESERVE, BX_VMM_MAP, BX_VMM_ACCESS };

// Which step of bx_gather failed.
enum { BX_GATHER_OK, BX_GATHER_FLUSH, BX_GATHER_COPY, BX_GATHER_SYNC };

static struct {
	void *lib;
	CUresult (*cuInit)(unsigned int);
	CUresult (*cuDriverGetVersion)(int *);
	CUresult (*cuGetErrorName)(CUresult, const char **);
	CUresult (*cuDeviceGetCount)(int *);
	CUresult (*cuDeviceGet)(CUdevice *, int);
	CUresult (*cuDeviceGetName)(char *, int, CUdevice);
	CUresult (*cuDeviceGetAttribute)(int *, int, CUdevice);
	CUresult (*cuDeviceTotalMem)(size_t *, CUdevice);
	CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice);
	CUresult (*cuDevicePrimaryCtxRelease)(CUdevice);
	CUresult (*cuCtxSetCurrent)(CUcontext);
	CUresult (*cuMemAlloc)(CUdeviceptr *, size_t);
	CUresult (*cuMemFree)(CUdeviceptr);
	CUresult (*cuMemGetHandleForAddressRange)(void *, CUdeviceptr, size_t, int, unsigned long long);
	CUresult (*cuMemcpyHtoD)(CUdeviceptr, const void *, size_t);
	CUresult (*cuMemcpyDtoH)(void *, CUdeviceptr, size_t);
	CUresult (*cuMemcpyDtoDAsync)(CUdeviceptr, CUdeviceptr, size_t, CUstream);
	CUresult (*cuStreamCreate)(CUstream *, unsigned int);
	CUresult (*cuStreamDestroy)(CUstream);
	CUresult (*cuStreamSynchronize)(CUstream);
	CUresult (*cuMemHostRegister)(void *, size_t, unsigned int);
	CUresult (*cuMemHostUnregister)(void *);
	CUresult (*cuFlushGPUDirectRDMAWrites)(int, int);
	// Imports of caller-owned memory, optional: IPC handles ...
	CUresult (*cuIpcOpenMemHandle)(CUdeviceptr *, CUipcMemHandle, unsigned int);
	CUresult (*cuIpcCloseMemHandle)(CUdeviceptr);
	CUresult (*cuMemGetAddressRange)(CUdeviceptr *, size_t *, CUdeviceptr);
	// ... and VMM allocations shared as POSIX fds.
	CUresult (*cuMemImportFromShareableHandle)(CUmemGenericAllocationHandle *, void *, int);
	CUresult (*cuMemGetAllocationGranularity)(size_t *, const CUmemAllocationProp *, int);
	CUresult (*cuMemAddressReserve)(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long);
	CUresult (*cuMemAddressFree)(CUdeviceptr, size_t);
	CUresult (*cuMemMap)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long);
	CUresult (*cuMemUnmap)(CUdeviceptr, size_t);
	CUresult (*cuMemSetAccess)(CUdeviceptr, size_t, const CUmemAccessDesc *, size_t);
	CUresult (*cuMemRelease)(CUmemGenericAllocationHandle);
} bx;

// bx_load opens the driver library and resolves every entry point. It
// returns NULL, or the dlerror text, or the name of a missing symbol (with
// *missing set). cuMemGetHandleForAddressRange (CUDA 11.7+) and
// cuFlushGPUDirectRDMAWrites (CUDA 11.3+) are optional.
static const char *bx_load(const char *path, int *missing) {
	*missing = 0;
	bx.lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (bx.lib == NULL) {
		return dlerror();
	}
#define BX_SYM(field, name) \
	if ((*(void **)(&bx.field) = dlsym(bx.lib, name)) == NULL) { *missing = 1; return name; }
	BX_SYM(cuInit, "cuInit")
	BX_SYM(cuDriverGetVersion, "cuDriverGetVersion")
	BX_SYM(cuGetErrorName, "cuGetErrorName")
	BX_SYM(cuDeviceGetCount, "cuDeviceGetCount")
	BX_SYM(cuDeviceGet, "cuDeviceGet")
	BX_SYM(cuDeviceGetName, "cuDeviceGetName")
	BX_SYM(cuDeviceGetAttribute, "cuDeviceGetAttribute")
	BX_SYM(cuDeviceTotalMem, "cuDeviceTotalMem_v2")
	BX_SYM(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain")
	BX_SYM(cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2")
	BX_SYM(cuCtxSetCurrent, "cuCtxSetCurrent")
	BX_SYM(cuMemAlloc, "cuMemAlloc_v2")
	BX_SYM(cuMemFree, "cuMemFree_v2")
	BX_SYM(cuMemcpyHtoD, "cuMemcpyHtoD_v2")
	BX_SYM(cuMemcpyDtoH, "cuMemcpyDtoH_v2")
	BX_SYM(cuMemcpyDtoDAsync, "cuMemcpyDtoDAsync_v2")
	BX_SYM(cuStreamCreate, "cuStreamCreate")
	BX_SYM(cuStreamDestroy, "cuStreamDestroy_v2")
	BX_SYM(cuStreamSynchronize, "cuStreamSynchronize")
	BX_SYM(cuMemHostRegister, "cuMemHostRegister_v2")
	BX_SYM(cuMemHostUnregister, "cuMemHostUnregister")
#undef BX_SYM
	*(void **)(&bx.cuMemGetHandleForAddressRange) = dlsym(bx.lib, "cuMemGetHandleForAddressRange");
	*(void **)(&bx.cuFlushGPUDirectRDMAWrites) = dlsym(bx.lib, "cuFlushGPUDirectRDMAWrites");
	return NULL;
}

// bx_optional resolves the entry points of one optional feature: names is
// a NULL-terminated list, fields the matching slots of bx. It returns NULL,
// or the first missing name (the feature is then off: every slot NULL).
static const char *bx_optional(const char **names, void ***fields) {
	for (int i = 0; names[i] != NULL; i++) {
		if ((*fields[i] = dlsym(bx.lib, names[i])) == NULL) {
			for (int j = 0; names[j] != NULL; j++) {
				*fields[j] = NULL;
			}
			return names[i];
		}
	}
	return NULL;
}

// bx_load_ipc resolves the CUDA IPC entry points; NULL or the missing one.
static const char *bx_load_ipc(void) {
	static const char *names[] = {"cuIpcOpenMemHandle_v2", "cuIpcCloseMemHandle", "cuMemGetAddressRange_v2", NULL};
	void **fields[] = {(void **)&bx.cuIpcOpenMemHandle, (void **)&bx.cuIpcCloseMemHandle, (void **)&bx.cuMemGetAddressRange};
	return bx_optional(names, fields);
}

// bx_load_vmm resolves the VMM import entry points; NULL or the missing one.
static const char *bx_load_vmm(void) {
	static const char *names[] = {"cuMemImportFromShareableHandle", "cuMemGetAllocationGranularity", "cuMemAddressReserve",
		"cuMemAddressFree", "cuMemMap", "cuMemUnmap", "cuMemSetAccess", "cuMemRelease", NULL};
	void **fields[] = {(void **)&bx.cuMemImportFromShareableHandle, (void **)&bx.cuMemGetAllocationGranularity,
		(void **)&bx.cuMemAddressReserve, (void **)&bx.cuMemAddressFree, (void **)&bx.cuMemMap, (void **)&bx.cuMemUnmap,
		(void **)&bx.cuMemSetAccess, (void **)&bx.cuMemRelease};
	return bx_optional(names, fields);
}

static int bx_has_dmabuf_export(void) { return bx.cuMemGetHandleForAddressRange != NULL; }
static int bx_has_rdma_flush(void) { return bx.cuFlushGPUDirectRDMAWrites != NULL; }

static const char *bx_error_name(CUresult r) {
	const char *s = NULL;
	if (bx.cuGetErrorName(r, &s) != 0 || s == NULL) {
		return NULL;
	}
	return s;
}

static CUresult bx_init(void) { return bx.cuInit(0); }
static CUresult bx_driver_version(int *v) { return bx.cuDriverGetVersion(v); }
static CUresult bx_device_count(int *n) { return bx.cuDeviceGetCount(n); }
static CUresult bx_device_get(CUdevice *d, int ordinal) { return bx.cuDeviceGet(d, ordinal); }
static CUresult bx_device_name(char *s, int n, CUdevice d) { return bx.cuDeviceGetName(s, n, d); }
static CUresult bx_device_total_mem(size_t *n, CUdevice d) { return bx.cuDeviceTotalMem(n, d); }
static CUresult bx_device_attribute(int *v, int attr, CUdevice d) { return bx.cuDeviceGetAttribute(v, attr, d); }
static CUresult bx_ctx_retain(CUcontext *c, CUdevice d) { return bx.cuDevicePrimaryCtxRetain(c, d); }
static CUresult bx_ctx_release(CUdevice d) { return bx.cuDevicePrimaryCtxRelease(d); }

// Every call below makes ctx current on the calling thread first, inside
// the same C call: a goroutine may run on any thread between cgo calls.

static CUresult bx_mem_alloc(CUcontext ctx, CUdeviceptr *p, size_t n) {
	CUresult r = bx.cuCtxSetCurrent(ctx);
	return r ? r : bx.cuMemAlloc(p, n);
}

static CUresult bx_mem_free(CUcontext ctx, CUdeviceptr p) {
	CUresult r = bx.cuCtxSetCurrent(ctx);
	return r ? r : bx.cuMemFree(p);
}

static CUresult bx_export_dmabuf(CUcontext ctx, int *fd, CUdeviceptr p, size_t n) {
	CUresult r = bx.cuCtxSetCurrent(ctx);
	return r ? r : bx.cuMemGetHandleForAddressRange(fd, p, n, BX_CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD, 0);
}

static CUresult bx_htod(CUcontext ctx, CUdeviceptr dst, const void *src, size_t n) {
	CUresult r = bx.cuCtxSetCurrent(ctx);
	return r ? r : bx.cuMemcpyHtoD(dst, src, n);
}

static CUresult bx_dtoh(CUcontext ctx, void *dst, CUdeviceptr src, size_t n) {
	CUresult r = bx.cuCtxSetCurrent(ctx);
	return r ? r : bx.cuMemcpyDtoH(dst, src, n);
}

static CUresult bx_stream_create(CUcontext ctx, CUstream *s) {
	CUresult r = bx.cuCtxSetCurrent(ctx);
	return r ? r : bx.cuStreamCreate(s, BX_CU_STREAM_NON_BLOCKING);
}

static CUresult bx_stream_destroy(CUcontext ctx, CUstream s) {
	CUresult r = bx.cuCtxSetCurrent(ctx);
	return r ? r : bx.cuStreamDestroy(s);
}

// bx_flush_rdma makes the NIC's writes to ctx's memory visible to the GPU
// (cuFlushGPUDirectRDMAWrites to the owner): on a GPU whose
// CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_WRITES_ORDERING is below OWNER they
// may otherwise reach a copy out of order.
static CUresult bx_flush_rdma(CUcontext ctx) {
	CUresult r = bx.cuCtxSetCurrent(ctx);
	return r ? r : bx.cuFlushGPUDirectRDMAWrites(BX_CU_FLUSH_GPU_DIRECT_RDMA_WRITES_TARGET_CURRENT_CTX,
		BX_CU_FLUSH_GPU_DIRECT_RDMA_WRITES_TO_OWNER);
}

// bx_gather flushes the NIC's writes first if flush is set, queues n
// device-to-device copies on stream s and waits for them (sync is 0 only in
// the test that proves the stand-in catches a gather returning before its
// copies are done). On a queueing error it still waits for the copies
// already queued, so none is running when the call returns, and returns the
// first error, with *failed saying which step it was.
static CUresult bx_gather(CUcontext ctx, CUstream s, int flush, int sync, const uint64_t *dst, const uint64_t *src, const uint64_t *len, size_t n, int *failed) {
	*failed = BX_GATHER_OK;
	CUresult r = bx.cuCtxSetCurrent(ctx);
	if (r) {
		return r;
	}
	if (flush && (r = bx.cuFlushGPUDirectRDMAWrites(BX_CU_FLUSH_GPU_DIRECT_RDMA_WRITES_TARGET_CURRENT_CTX,
			BX_CU_FLUSH_GPU_DIRECT_RDMA_WRITES_TO_OWNER)) != 0) {
		*failed = BX_GATHER_FLUSH;
		return r;
	}
	CUresult first = 0;
	for (size_t i = 0; i < n; i++) {
		if ((first = bx.cuMemcpyDtoDAsync(dst[i], src[i], len[i], s)) != 0) {
			*failed = BX_GATHER_COPY;
			break;
		}
	}
	if (!sync) {
		return first;
	}
	r = bx.cuStreamSynchronize(s);
	if (!first && r) {
		*failed = BX_GATHER_SYNC;
	}
	return first ? first : r;
}

// bx_ipc_open opens another process's cuMemAlloc memory by its IPC handle
// (64 bytes at h) and returns the whole allocation's address and size.
static CUresult bx_ipc_open(CUcontext ctx, const void *h, CUdeviceptr *p, size_t *size, int *failed_range) {
	*failed_range = 0;
	CUresult r = bx.cuCtxSetCurrent(ctx);
	if (r) {
		return r;
	}
	CUipcMemHandle handle;
	memcpy(handle.reserved, h, sizeof handle.reserved);
	if ((r = bx.cuIpcOpenMemHandle(p, handle, BX_CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS)) != 0) {
		return r;
	}
	CUdeviceptr base = 0;
	if ((r = bx.cuMemGetAddressRange(&base, size, *p)) != 0) {
		*failed_range = 1;
		bx.cuIpcCloseMemHandle(*p);
		return r;
	}
	*p = base;
	return 0;
}

static CUresult bx_ipc_close(CUcontext ctx, CUdeviceptr p) {
	CUresult r = bx.cuCtxSetCurrent(ctx);
	return r ? r : bx.cuIpcCloseMemHandle(p);
}

// bx_vmm_import imports a VMM allocation shared as a POSIX fd and maps its
// first need bytes, rounded up to the allocation granularity, read-write for
// device dev: *va and *mapped say where. The handle is released once mapped
// (the mapping keeps the memory). On failure nothing is left and *failed
// says which step it was.
static CUresult bx_vmm_import(CUcontext ctx, int fd, int dev, size_t need, CUdeviceptr *va, size_t *mapped, int *failed) {
	*failed = BX_VMM_OK;
	CUresult r = bx.cuCtxSetCurrent(ctx);
	if (r) {
		return r;
	}
	CUmemGenericAllocationHandle h;
	if ((r = bx.cuMemImportFromShareableHandle(&h, (void *)(uintptr_t)fd, BX_CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)) != 0) {
		*failed = BX_VMM_IMPORT;
		return r;
	}
	CUmemAllocationProp prop;
	memset(&prop, 0, sizeof prop);
	prop.type = BX_CU_MEM_ALLOCATION_TYPE_PINNED;
	prop.location.type = BX_CU_MEM_LOCATION_TYPE_DEVICE;
	prop.location.id = dev;
	size_t g = 0;
	if ((r = bx.cuMemGetAllocationGranularity(&g, &prop, BX_CU_MEM_ALLOC_GRANULARITY_MINIMUM)) != 0 || g == 0) {
		*failed = BX_VMM_GRANULARITY;
		bx.cuMemRelease(h);
		return r ? r : 1; // CUDA_ERROR_INVALID_VALUE
	}
	*mapped = (need + g - 1) / g * g;
	if ((r = bx.cuMemAddressReserve(va, *mapped, 0, 0, 0)) != 0) {
		*failed = BX_VMM_RESERVE;
		bx.cuMemRelease(h);
		return r;
	}
	if ((r = bx.cuMemMap(*va, *mapped, 0, h, 0)) != 0) {
		*failed = BX_VMM_MAP;
		bx.cuMemAddressFree(*va, *mapped);
		bx.cuMemRelease(h);
		return r;
	}
	bx.cuMemRelease(h);
	CUmemAccessDesc access;
	memset(&access, 0, sizeof access);
	access.location.type = BX_CU_MEM_LOCATION_TYPE_DEVICE;
	access.location.id = dev;
	access.flags = BX_CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
	if ((r = bx.cuMemSetAccess(*va, *mapped, &access, 1)) != 0) {
		*failed = BX_VMM_ACCESS;
		bx.cuMemUnmap(*va, *mapped);
		bx.cuMemAddressFree(*va, *mapped);
		return r;
	}
	return 0;
}

// bx_vmm_release unmaps what bx_vmm_import mapped and frees the address
// range: the importer's reference to the memory goes.
static CUresult bx_vmm_release(CUcontext ctx, CUdeviceptr va, size_t n) {
	CUresult r = bx.cuCtxSetCurrent(ctx);
	if (r || (r = bx.cuMemUnmap(va, n)) != 0) {
		return r;
	}
	return bx.cuMemAddressFree(va, n);
}

static CUresult bx_host_register(CUcontext ctx, void *p, size_t n) {
	CUresult r = bx.cuCtxSetCurrent(ctx);
	return r ? r : bx.cuMemHostRegister(p, n, 0);
}

static CUresult bx_host_unregister(CUcontext ctx, void *p) {
	CUresult r = bx.cuCtxSetCurrent(ctx);
	return r ? r : bx.cuMemHostUnregister(p);
}
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// cuContext is a CUDA context (the device's primary context).
type cuContext = C.CUcontext

// cuDevice is a CUDA device handle.
type cuDevice = C.CUdevice

// cuStream is a CUDA stream.
type cuStream = C.CUstream

// cudaSuccess is CUDA_SUCCESS.
const cudaSuccess = 0

// cudaError is a failed driver call, named with cuGetErrorName.
type cudaError struct {
	Op   string // the driver entry point
	Code int
	Name string // e.g. CUDA_ERROR_OUT_OF_MEMORY
}

func (e *cudaError) Error() string {
	return fmt.Sprintf("%s: %s (%d)", e.Op, e.Name, e.Code)
}

// check converts a CUresult into nil or a *cudaError.
func check(op string, r C.CUresult) error {
	if r == cudaSuccess {
		return nil
	}
	name := "CUDA error"
	if s := C.bx_error_name(r); s != nil {
		name = C.GoString(s)
	}
	return &cudaError{Op: op, Code: int(r), Name: name}
}

// loadDriver opens the CUDA driver library at path. missing reports that
// the library opened but lacks a required entry point.
func loadDriver(path string) (err error, missing bool) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var miss C.int
	if msg := C.bx_load(cpath, &miss); msg != nil {
		return fmt.Errorf("%s", C.GoString(msg)), miss != 0
	}
	return nil, false
}

func hasDmabufExport() bool { return C.bx_has_dmabuf_export() != 0 }

// loadIPC resolves the CUDA IPC entry points (cuIpcOpenMemHandle_v2 and
// friends), after loadDriver. It returns "" or the missing one.
func loadIPC() string { return goStringOrEmpty(C.bx_load_ipc()) }

// loadVMM resolves the entry points that import and map a VMM allocation
// shared as a POSIX fd, after loadDriver. It returns "" or the missing one.
func loadVMM() string { return goStringOrEmpty(C.bx_load_vmm()) }

func goStringOrEmpty(s *C.char) string {
	if s == nil {
		return ""
	}
	return C.GoString(s)
}

// hasRDMAFlush reports whether the driver has cuFlushGPUDirectRDMAWrites.
func hasRDMAFlush() bool { return C.bx_has_rdma_flush() != 0 }

func cuInit() error { return check("cuInit", C.bx_init()) }

func cuDriverVersion() (int, error) {
	var v C.int
	err := check("cuDriverGetVersion", C.bx_driver_version(&v))
	return int(v), err
}

func cuDeviceCount() (int, error) {
	var n C.int
	err := check("cuDeviceGetCount", C.bx_device_count(&n))
	return int(n), err
}

func cuDeviceGet(ordinal int) (C.CUdevice, error) {
	var d C.CUdevice
	err := check("cuDeviceGet", C.bx_device_get(&d, C.int(ordinal)))
	return d, err
}

func cuDeviceName(d C.CUdevice) string {
	var buf [256]C.char
	if C.bx_device_name(&buf[0], C.int(len(buf)), d) != cudaSuccess {
		return ""
	}
	return C.GoString(&buf[0])
}

func cuDeviceTotalMem(d C.CUdevice) (int64, error) {
	var n C.size_t
	err := check("cuDeviceTotalMem", C.bx_device_total_mem(&n, d))
	return int64(n), err
}

// Device attributes the provider reads (CUdevice_attribute).
const (
	attrGPUDirectRDMAFlushWritesOptions = C.BX_CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_FLUSH_WRITES_OPTIONS
	attrGPUDirectRDMAWritesOrdering     = C.BX_CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_WRITES_ORDERING
	attrDmaBufSupported                 = C.BX_CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED
	attrVMMSupported                    = C.BX_CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED
	attrPOSIXFDSupported                = C.BX_CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED
)

// attrNames names the attributes in errors.
var attrNames = map[int]string{
	attrGPUDirectRDMAFlushWritesOptions: "CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_FLUSH_WRITES_OPTIONS",
	attrGPUDirectRDMAWritesOrdering:     "CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_WRITES_ORDERING",
	attrDmaBufSupported:                 "CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED",
	attrVMMSupported:                    "CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED",
	attrPOSIXFDSupported:                "CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED",
}

// cuDeviceAttribute reads a device attribute.
func cuDeviceAttribute(d C.CUdevice, attr int) (int, error) {
	var v C.int
	err := check("cuDeviceGetAttribute("+attrNames[attr]+")", C.bx_device_attribute(&v, C.int(attr), d))
	return int(v), err
}

func cuDmabufSupported(d C.CUdevice) (bool, error) {
	v, err := cuDeviceAttribute(d, attrDmaBufSupported)
	return v != 0, err
}

// cuFlushRDMAWrites makes the NIC's writes to ctx's memory visible to the
// device's own reads (cuFlushGPUDirectRDMAWrites, current context, to the
// owner). Only call it when hasRDMAFlush.
func cuFlushRDMAWrites(ctx cuContext) error {
	return check("cuFlushGPUDirectRDMAWrites", C.bx_flush_rdma(ctx))
}

func cuPrimaryCtxRetain(d C.CUdevice) (cuContext, error) {
	var c C.CUcontext
	err := check("cuDevicePrimaryCtxRetain", C.bx_ctx_retain(&c, d))
	return c, err
}

func cuPrimaryCtxRelease(d C.CUdevice) error {
	return check("cuDevicePrimaryCtxRelease", C.bx_ctx_release(d))
}

func cuMemAlloc(ctx cuContext, n int64) (uint64, error) {
	var p C.CUdeviceptr
	err := check("cuMemAlloc", C.bx_mem_alloc(ctx, &p, C.size_t(n)))
	return uint64(p), err
}

func cuMemFree(ctx cuContext, p uint64) error {
	return check("cuMemFree", C.bx_mem_free(ctx, C.CUdeviceptr(p)))
}

func cuExportDmabuf(ctx cuContext, p uint64, n int64) (int, error) {
	var fd C.int = -1
	err := check("cuMemGetHandleForAddressRange(CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD)", C.bx_export_dmabuf(ctx, &fd, C.CUdeviceptr(p), C.size_t(n)))
	return int(fd), err
}

// cuHtoD copies src to device address dst. src may be Go memory: the
// driver reads it during the call only.
func cuHtoD(ctx cuContext, dst uint64, src []byte) error {
	if len(src) == 0 {
		return nil
	}
	return check("cuMemcpyHtoD", C.bx_htod(ctx, C.CUdeviceptr(dst), unsafe.Pointer(&src[0]), C.size_t(len(src))))
}

// cuDtoH copies device address src to dst.
func cuDtoH(ctx cuContext, dst []byte, src uint64) error {
	if len(dst) == 0 {
		return nil
	}
	return check("cuMemcpyDtoH", C.bx_dtoh(ctx, unsafe.Pointer(&dst[0]), C.CUdeviceptr(src), C.size_t(len(dst))))
}

func cuStreamCreate(ctx cuContext) (cuStream, error) {
	var s C.CUstream
	err := check("cuStreamCreate", C.bx_stream_create(ctx, &s))
	return s, err
}

func cuStreamDestroy(ctx cuContext, s cuStream) error {
	return check("cuStreamDestroy", C.bx_stream_destroy(ctx, s))
}

// gatherSteps names bx_gather's steps in errors.
var gatherSteps = map[C.int]string{
	C.BX_GATHER_OK:    "cuMemcpyDtoDAsync/cuStreamSynchronize",
	C.BX_GATHER_FLUSH: "cuFlushGPUDirectRDMAWrites",
	C.BX_GATHER_COPY:  "cuMemcpyDtoDAsync",
	C.BX_GATHER_SYNC:  "cuStreamSynchronize",
}

// cuGather queues the copies (device addresses) on s and waits for them;
// with flush it first makes the NIC's writes visible (cuFlushGPUDirectRDMAWrites,
// which needs hasRDMAFlush). sync false skips the wait: only a test does
// that, to prove the stand-in driver catches it.
func cuGather(ctx cuContext, s cuStream, flush, sync bool, dst, src, n []uint64) error {
	if len(n) == 0 {
		return nil
	}
	var failed C.int
	r := C.bx_gather(ctx, s, cbool(flush), cbool(sync),
		(*C.uint64_t)(unsafe.Pointer(&dst[0])), (*C.uint64_t)(unsafe.Pointer(&src[0])),
		(*C.uint64_t)(unsafe.Pointer(&n[0])), C.size_t(len(n)), &failed)
	return check(gatherSteps[failed], r)
}

func cbool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// cuIPCOpen opens another process's cuMemAlloc memory by its 64-byte IPC
// handle (cuIpcOpenMemHandle_v2 with CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS) and
// returns the whole allocation (cuMemGetAddressRange_v2). handle must be
// 64 bytes. Only call it when loadIPC succeeded.
func cuIPCOpen(ctx cuContext, handle []byte) (ptr uint64, size int64, err error) {
	var (
		p           C.CUdeviceptr
		n           C.size_t
		failedRange C.int
	)
	r := C.bx_ipc_open(ctx, unsafe.Pointer(&handle[0]), &p, &n, &failedRange)
	op := "cuIpcOpenMemHandle"
	if failedRange != 0 {
		op = "cuMemGetAddressRange"
	}
	return uint64(p), int64(n), check(op, r)
}

// cuIPCClose closes what cuIPCOpen opened.
func cuIPCClose(ctx cuContext, p uint64) error {
	return check("cuIpcCloseMemHandle", C.bx_ipc_close(ctx, C.CUdeviceptr(p)))
}

// vmmSteps names bx_vmm_import's steps in errors.
var vmmSteps = map[C.int]string{
	C.BX_VMM_OK:          "cuCtxSetCurrent",
	C.BX_VMM_IMPORT:      "cuMemImportFromShareableHandle(CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)",
	C.BX_VMM_GRANULARITY: "cuMemGetAllocationGranularity",
	C.BX_VMM_RESERVE:     "cuMemAddressReserve",
	C.BX_VMM_MAP:         "cuMemMap",
	C.BX_VMM_ACCESS:      "cuMemSetAccess",
}

// cuVMMImport imports the VMM allocation fd shares and maps its first need
// bytes, rounded up to the allocation granularity, read-write for device
// dev. It returns the mapping's address and size. Only call it when loadVMM
// succeeded.
func cuVMMImport(ctx cuContext, fd, dev int, need int64) (va uint64, mapped int64, err error) {
	var (
		p      C.CUdeviceptr
		n      C.size_t
		failed C.int
	)
	r := C.bx_vmm_import(ctx, C.int(fd), C.int(dev), C.size_t(need), &p, &n, &failed)
	return uint64(p), int64(n), check(vmmSteps[failed], r)
}

// cuVMMRelease unmaps and frees what cuVMMImport mapped.
func cuVMMRelease(ctx cuContext, va uint64, n int64) error {
	return check("cuMemUnmap/cuMemAddressFree", C.bx_vmm_release(ctx, C.CUdeviceptr(va), C.size_t(n)))
}

// cuHostRegister page-locks mem (not Go memory: a staging mapping) for DMA.
func cuHostRegister(ctx cuContext, mem []byte) error {
	return check("cuMemHostRegister", C.bx_host_register(ctx, unsafe.Pointer(&mem[0]), C.size_t(len(mem))))
}

func cuHostUnregister(ctx cuContext, mem []byte) error {
	return check("cuMemHostUnregister", C.bx_host_unregister(ctx, unsafe.Pointer(&mem[0])))
}
