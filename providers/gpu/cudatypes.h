// The CUDA driver API types the GPU provider, the stand-in driver
// (testdata/fakecuda.c) and its test programs use, declared once so no
// CUDA header or toolkit is needed. Layouts follow cuda.h.
#ifndef BLOCKXFER_CUDATYPES_H
#define BLOCKXFER_CUDATYPES_H

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef void *CUstream;
typedef unsigned long long CUdeviceptr;
typedef unsigned long long CUmemGenericAllocationHandle;

// 64 opaque bytes (the stand-in's own layout names the owner's memfd).
typedef struct {
	char reserved[64];
} CUipcMemHandle;

typedef struct {
	int type; // CU_MEM_LOCATION_TYPE_DEVICE = 1
	int id;
} CUmemLocation;

typedef struct {
	int type;                 // CU_MEM_ALLOCATION_TYPE_PINNED = 1
	int requestedHandleTypes; // CUmemAllocationHandleType
	CUmemLocation location;
	void *win32HandleMetaData;
	struct {
		unsigned char compressionType;
		unsigned char gpuDirectRDMACapable;
		unsigned short usage;
		unsigned char reserved[4];
	} allocFlags;
} CUmemAllocationProp;

typedef struct {
	CUmemLocation location;
	int flags; // CU_MEM_ACCESS_FLAGS_PROT_READ = 1, _READWRITE = 3
} CUmemAccessDesc;

#endif
