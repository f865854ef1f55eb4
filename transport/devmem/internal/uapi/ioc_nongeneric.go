//go:build ppc64 || ppc64le || mips || mipsle || mips64 || mips64le

package uapi

// powerpc and mips _IOC_WRITE and _IOC_SIZEBITS.
const (
	iocWrite    = 4
	iocSizeBits = 13
)
