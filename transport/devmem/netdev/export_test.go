package netdev

// The unexported codecs, for the tests of package netdev_test, which build
// the kernel's side of the encodings with netdevtest.
var (
	DecodeDevice    = decodeDevice
	DecodeQueue     = decodeQueue
	DecodePagePool  = decodePagePool
	DecodeQStats    = decodeQStats
	DecodeBindReply = decodeBindReply
	EncodeBindRX    = encodeBindRX
	EncodeBindTX    = encodeBindTX
)
