// Package tcp is the plain TCP transport: the fallback that always works, and
// the baseline devmem is measured against.
//
// The server sends each extent straight from the volume's backing file with
// sendfile(2), at an explicit offset, so one open file serves every data
// connection without seeking. The client receives straight into the
// destination when the provider's memory is mapped in this process
// ([memory.Mapper]); otherwise through a host staging buffer and
// [memory.Provider.CopyIn]. A receive has the kernel wake it only once up to
// 512 KiB of what it is owed has arrived (SO_RCVLOWAT, set to the bytes
// still owed when fewer), not for every segment.
package tcp
