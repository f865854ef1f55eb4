package devmem

// SoftNICConfig configures a software NIC (see NewSoftNIC).
type SoftNICConfig struct {
	// Ifindex is the device the NIC claims to be: bindings for another
	// ifindex fail with ENODEV. Default 1 (lo, which carries the
	// emulated traffic).
	Ifindex int
	// RXQueues is the number of RX queues that can be bound. Default 8.
	RXQueues int
	// SkbSize is the most payload bytes the NIC puts in one emulated skb
	// (a GRO-sized aggregate). Default 64 KiB.
	SkbSize int
	// LinearEvery makes every LinearEvery-th skb fail header split: its
	// first LinearBytes bytes land in host memory and are reported as
	// SCM_DEVMEM_LINEAR (copied into the iovec). 0 disables it.
	LinearEvery int
	// LinearBytes is the size of the linear part of such an skb; a value
	// of SkbSize or more makes the whole skb linear. Default 1448. An skb
	// whose whole payload is linear has no frag in the dmabuf, so, as in
	// the kernel, it is an ordinary readable skb: recvmsg returns its
	// bytes without any devmem control message (see
	// SoftNIC.FailHeaderSplit).
	LinearBytes int
	// UnsplitEvery makes every UnsplitEvery-th skb fail header split
	// entirely: its whole payload lands in host memory and is returned
	// as plain bytes, without devmem control messages. 0 disables it.
	UnsplitEvery int
	// ZerocopyStart is the zerocopy counter of each socket's first send
	// (the kernel starts at 0); set it near 2^32 to exercise wrapping.
	ZerocopyStart uint32
	// HoldCompletions keeps TX completions until ReleaseCompletions is
	// called, as a NIC that has not finished transmitting would; released
	// completions coalesce in the error queue like the kernel's.
	HoldCompletions bool
}

// SoftNICStats are a software NIC's counters.
type SoftNICStats struct {
	Bindings      int   // live bindings
	Sockets       int   // open sockets
	Tokens        int   // RX tokens handed out and not returned
	FreeChunks    int   // free page-pool chunks over all RX bindings
	Chunks        int   // page-pool chunks over all RX bindings
	Skbs          int64 // skbs received into the dmabuf
	LinearSkbs    int64 // skbs with a linear part
	PoolEmpty     int64 // times a socket waited for a free chunk
	DevmemRXBytes int64 // payload bytes received into the dmabuf (incl. linear)
	DevmemTXBytes int64 // payload bytes sent from a TX dmabuf
	// TokensReleasedOnClose counts tokens still held when their socket
	// was closed (released by the socket's destruction, as the kernel's
	// tcp_release_user_frags does). Nonzero means a receiver leaked.
	TokensReleasedOnClose int64
	// UnsplitSkbs and UnsplitBytes count the skbs that failed header
	// split entirely (FailHeaderSplit, UnsplitEvery, or a linear part
	// that took the whole skb): readable skbs on a bound queue, delivered
	// as plain bytes. They are not counted in Skbs or DevmemRXBytes.
	UnsplitSkbs  int64
	UnsplitBytes int64
}
