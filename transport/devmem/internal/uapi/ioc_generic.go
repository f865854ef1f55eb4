//go:build !ppc64 && !ppc64le && !mips && !mipsle && !mips64 && !mips64le

package uapi

// asm-generic _IOC_WRITE and _IOC_SIZEBITS.
const (
	iocWrite    = 1
	iocSizeBits = 14
)
