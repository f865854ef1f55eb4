package blockproto

import "time"

// Version is the protocol version this package speaks. A peer that offers a
// different version is refused with [ErrVersion].
const Version = 1

// Preambles open every connection: 3 bytes of kind and 1 byte of version,
// padded to PreambleLen bytes.
const (
	// PreambleLen is the length of every connection preamble in bytes.
	PreambleLen = 8
	// TokenLen is the length of a data-connection token in bytes.
	TokenLen = 16
	// NonceLen is the length of the authentication nonces in bytes.
	NonceLen = 32
	// MACLen is the length of an HMAC-SHA256 proof in bytes.
	MACLen = 32
)

// Bounds on every variable-length field. Decoders reject larger values before
// allocating.
const (
	// MaxFrame is the largest control frame body, type byte included.
	MaxFrame = 1 << 20
	// MaxHandshakeFrame is the largest frame body a server accepts before
	// Welcome: the largest Hello (171 bytes) and Auth fit with room to
	// spare.
	MaxHandshakeFrame = 512
	// MaxName is the longest volume, client or server name in bytes.
	MaxName = 128
	// MaxMessage is the longest error or reason text in bytes.
	MaxMessage = 4096
	// MaxVolumes is the most volumes one VolumeList (one page of a
	// listing) may carry. The largest VolumeList, MaxVolumes entries with
	// MaxName-byte names and a MaxName-byte Next, is 614533 bytes, well
	// within MaxFrame, so a page is never cut short by the frame size.
	MaxVolumes = 4096
	// MaxDataConns is the most data connections one session may open.
	MaxDataConns = 64
	// MaxExtentLen is the largest extent announced on a data connection.
	MaxExtentLen = 64 << 20
	// MaxReadLen is the largest byte range one Read may ask for.
	MaxReadLen = 1 << 40
	// MaxPutSize is the largest volume an upload may write (256 TiB: the
	// most extents a catalog volume may have, of the largest extent size).
	MaxPutSize = 1 << 48
	// MaxPutData is the most payload bytes one PutData may carry.
	MaxPutData = 512 << 10
	// MaxInlineData is the most payload bytes one Extent may carry inline
	// ([Extent.Data]).
	MaxInlineData = 64 << 10
	// MaxPutWindow is the largest upload window a server may grant in
	// PutAck.
	MaxPutWindow = 1 << 30
)

// Type identifies a control message.
type Type uint8

// Control message types. Values are part of the wire format.
const (
	TypeHello        Type = 1  // client -> server
	TypeChallenge    Type = 2  // server -> client
	TypeAuth         Type = 3  // client -> server
	TypeWelcome      Type = 4  // server -> client
	TypeDataAttached Type = 5  // server -> client
	TypeListVolumes  Type = 6  // client -> server
	TypeVolumeList   Type = 7  // server -> client
	TypeStatVolume   Type = 8  // client -> server
	TypeVolumeInfo   Type = 9  // server -> client
	TypeRead         Type = 10 // client -> server
	TypeExtent       Type = 11 // server -> client
	TypeReadDone     Type = 12 // server -> client
	TypeError        Type = 13 // either direction
	TypeCancel       Type = 14 // client -> server
	TypePing         Type = 15 // either direction
	TypePong         Type = 16 // either direction
	TypeGoodbye      Type = 17 // server -> client: draining, send no new reads
	TypePutVolume    Type = 18 // client -> server: start an upload
	TypePutAck       Type = 19 // server -> client: upload accepted, or window moved
	TypePutData      Type = 20 // client -> server: the next bytes of an upload
	TypePutCommit    Type = 21 // client -> server: every byte sent, commit
	TypePutAbort     Type = 22 // client -> server: abandon an upload
	TypePutDone      Type = 23 // server -> client: upload committed
	TypePutError     Type = 24 // server -> client: upload failed
)

// Caps is a bit set of capabilities a peer offers in Hello/Challenge.
type Caps uint64

// Capability bits.
const (
	// CapTCP: plain TCP data connections.
	CapTCP Caps = 1 << 0
	// CapDevmemRX: the client receives with devmem RX (payload lands in a
	// dmabuf bound to a NIC queue).
	CapDevmemRX Caps = 1 << 1
	// CapDevmemTX: the server sends with devmem TX from dmabuf buffers.
	CapDevmemTX Caps = 1 << 2
	// CapEmulated: devmem is provided by the software NIC, not hardware.
	CapEmulated Caps = 1 << 3
	// CapDataKinds: in Hello, the client declares each data connection's
	// [DataKind] after its token, and takes Welcome.SmallRead; in
	// Challenge, the server reads that byte. Both must offer it for the
	// byte to be sent (docs/protocol.md 6.2).
	CapDataKinds Caps = 1 << 4
	// CapInlineData: in Hello, the client takes extents whose bytes come
	// in the Extent itself ([Extent.Data]); in Challenge, the server may
	// send them. Both must offer it for such an Extent to be sent
	// (docs/protocol.md 5.12).
	CapInlineData Caps = 1 << 5
	// CapInlineLarge: in Hello, the client reads inline extents of up to
	// [MaxInlineData] bytes without a fresh buffer for each; in Challenge,
	// the server may send a session's only read inline up to that size
	// rather than 32 KiB. It means nothing without [CapInlineData] on both
	// sides (docs/protocol.md 5.12).
	CapInlineLarge Caps = 1 << 6
)

// DataKind is how a client receives one data connection's payload, as it
// declares after the connection's token when both peers offered
// [CapDataKinds]. A server sends small reads on plain connections and the
// others on devmem ones (docs/protocol.md 7.2).
type DataKind uint8

// Data connection kinds.
const (
	// DataPlain: received over plain TCP into host memory.
	DataPlain DataKind = 0
	// DataDevmem: steered to a devmem RX queue of a NIC.
	DataDevmem DataKind = 1
	// DataDevmemEmulated: steered to the software NIC's devmem queue.
	DataDevmemEmulated DataKind = 2
)

// MaxDataKind is the highest DataKind; a larger byte is malformed.
const MaxDataKind = DataDevmemEmulated

// Devmem reports whether the connection is steered to a devmem queue.
func (k DataKind) Devmem() bool { return k == DataDevmem || k == DataDevmemEmulated }

// Msg is a control message. Every message type in this package implements it.
type Msg interface {
	// Type returns the message's wire type.
	Type() Type
}

// Hello opens the control connection (client -> server).
type Hello struct {
	Caps   Caps
	Nonce  [NonceLen]byte // client nonce for the challenge-response
	Client string         // free-form client name, for logs (<= MaxName)
}

// Challenge answers Hello (server -> client).
type Challenge struct {
	Caps      Caps
	Nonce     [NonceLen]byte // server nonce
	SessionID uint64
	Server    string // server name, for logs (<= MaxName)
}

// Auth proves the client knows the pre-shared key (client -> server).
type Auth struct {
	MAC [MACLen]byte // ClientProof(key, hello nonce, challenge nonce, session)
}

// Welcome accepts the client and proves the server knows the key too
// (server -> client). It carries one single-use token per data connection the
// client may open.
type Welcome struct {
	MAC    [MACLen]byte // ServerProof(key, hello nonce, challenge nonce, session)
	Tokens [][TokenLen]byte
	// SmallRead, when not zero, is the read length below which the
	// server sends a read on plain data connections rather than devmem
	// ones. Optional: sent only to a client whose Hello offered
	// CapDataKinds.
	SmallRead uint64
}

// DataAttached tells the client that the data connection that presented
// Tokens[Index] was accepted (server -> client).
type DataAttached struct {
	Index uint16
}

// ListVolumes asks for one page of the server's volumes (client -> server):
// those whose names sort bytewise after After, in that order. The server
// answers with a VolumeList of at most MaxVolumes entries.
//
// An empty After asks for the first page and is encoded as an empty body,
// exactly as ListVolumes was before it had a cursor, so an older client's
// request still means "from the start".
type ListVolumes struct {
	// After is the cursor: "" for the first page, otherwise the Next of
	// the previous page (0..MaxName bytes, not necessarily a valid name).
	After string
}

// VolumeStat describes one volume.
type VolumeStat struct {
	Name       string
	Size       uint64
	ExtentSize uint32
	Generation uint64
}

// VolumeList answers ListVolumes with one page of the listing.
type VolumeList struct {
	// Volumes holds the page's volumes (0..MaxVolumes), sorted bytewise
	// by name, each named after the request's After.
	Volumes []VolumeStat
	// Next is "" when this page ends the listing. Otherwise more volumes
	// may follow: Next is the Name of the last entry of Volumes, and the
	// client asks for the next page with ListVolumes{After: Next}. Next
	// is omitted from the encoding when empty.
	Next string
}

// StatVolume asks about one volume (client -> server).
type StatVolume struct {
	Name string
}

// VolumeInfo answers StatVolume. The per-extent checksums are not carried;
// they arrive with each extent.
type VolumeInfo struct {
	Volume VolumeStat
}

// Read asks for Length bytes of Volume starting at Offset (client -> server).
// The server answers with Extent announcements, then ReadDone or Error.
type Read struct {
	ID       uint64 // client-chosen, unique among the session's open reads
	Volume   string
	Offset   uint64
	Length   uint64    // 1..MaxReadLen
	Deadline time.Time // zero: none; encoded as Unix nanoseconds
	// Generation, when not zero, is the volume generation the client
	// expects: a server whose volume has another generation answers
	// CodeReplaced and sends none of its bytes. Encoded only when not
	// zero, or when Flags is not zero (then 0 means none).
	Generation uint64
	// Flags are the client's hints for this read. Encoded only when not
	// zero, after Generation; sent only to a server that offered
	// CapDataKinds (an older server refuses the longer body).
	Flags ReadFlags
}

// ReadFlags are a Read's hints. A server ignores bits it does not know.
type ReadFlags uint8

// Read hints.
const (
	// ReadPlain asks for the read's extents on plain data connections
	// only, as for a destination that cannot take devmem.
	ReadPlain ReadFlags = 1 << 0
)

// Extent announces payload that follows on a data connection (server ->
// client). It is sent before the first of its bytes is written: the bytes are
// DataConn's stream bytes [StreamOffset, StreamOffset+Length). Or, when
// both peers offered [CapInlineData], it may carry its bytes itself (Data,
// at most MaxInlineData): DataConn and StreamOffset are then 0 and no
// stream bytes belong to it.
type Extent struct {
	ID           uint64 // the Read's ID
	DataConn     uint16 // index into Welcome.Tokens
	StreamOffset uint64 // offset in that data connection's byte stream
	VolumeOffset uint64 // where the bytes belong in the volume
	Length       uint32 // 1..MaxExtentLen
	CRC32C       uint32 // Castagnoli CRC of the bytes
	// Data holds the Length bytes inline; nil: they follow on DataConn.
	Data []byte
}

// ReadDone ends a Read whose every extent was announced (server -> client).
type ReadDone struct {
	ID    uint64
	Bytes uint64 // total announced payload
}

// Code classifies an Error.
type Code uint16

// Error codes. Values are part of the wire format.
const (
	CodeInternal     Code = 1
	CodeBadRequest   Code = 2
	CodeAuth         Code = 3
	CodeNotFound     Code = 4
	CodeOutOfRange   Code = 5
	CodeBusy         Code = 6
	CodeTimedOut     Code = 7
	CodeCancelled    Code = 8
	CodeShuttingDown Code = 9
	CodeIO           Code = 10
	CodeVersion      Code = 11
	CodeExists       Code = 12
	// CodeCorrupt: the volume's stored bytes no longer match the CRC-32C
	// recorded when they were written; the server refused to send them.
	CodeCorrupt Code = 13
	// CodeReplaced: the volume has another generation than the Read
	// asked for (it was replaced since the client learnt it).
	CodeReplaced Code = 14
)

// Error reports a failure (either direction). ID 0 concerns the session, or
// answers a pending ListVolumes or StatVolume (see docs/protocol.md); any
// other ID names a Read, which ends with it.
type Error struct {
	ID      uint64
	Code    Code
	Message string // <= MaxMessage
}

// Cancel abandons a Read (client -> server). Extents already announced are
// still sent in full, so the data streams stay in step.
type Cancel struct {
	ID uint64
}

// Ping asks the peer to answer with a Pong carrying the same Seq.
type Ping struct {
	Seq uint64
}

// Pong answers Ping.
type Pong struct {
	Seq uint64
}

// Goodbye tells the client that the server is draining: reads already
// accepted will finish, new ones are refused (server -> client).
type Goodbye struct {
	Reason string
}

// PutVolume starts an upload of a whole volume over the control connection
// (client -> server). The server answers PutAck when it is ready for data,
// or PutError. With Replace an existing volume of that name is replaced when
// the upload commits (its generation grows); without it the upload fails
// with CodeExists if the name is taken.
type PutVolume struct {
	ID         uint64 // client-chosen, unique among the session's open reads and uploads
	Name       string
	Size       uint64 // 1..MaxPutSize
	ExtentSize uint32 // 1..MaxExtentLen; the server may accept fewer
	Replace    bool
}

// PutAck tells the client that the server holds Acked bytes of the upload
// and that it may send bytes up to Acked+Window (server -> client). The first
// PutAck of an upload (Acked 0) accepts it.
type PutAck struct {
	ID     uint64
	Acked  uint64 // bytes received and handed to storage, <= MaxPutSize
	Window uint32 // 1..MaxPutWindow
}

// PutData carries the next bytes of an upload, in order (client -> server).
type PutData struct {
	ID     uint64
	Offset uint64 // the upload's bytes so far; Offset+len(Data) <= MaxPutSize
	Data   []byte // 1..MaxPutData bytes
}

// PutCommit says every byte of the upload was sent (client -> server). The
// server makes the volume durable and answers PutDone, or PutError.
type PutCommit struct {
	ID uint64
}

// PutAbort abandons an upload (client -> server). The server discards what
// it received and answers PutError with CodeCancelled.
type PutAbort struct {
	ID uint64
}

// PutDone ends an upload that was committed (server -> client): the volume
// is durable and listed, with the generation in Volume.
type PutDone struct {
	ID     uint64
	Volume VolumeStat
}

// PutError ends an upload that failed (server -> client). It has the layout
// of Error, with a non-zero ID naming the upload.
type PutError struct {
	ID      uint64
	Code    Code
	Message string // <= MaxMessage
}

// Type returns TypeHello.
func (*Hello) Type() Type { return TypeHello }

// Type returns TypeChallenge.
func (*Challenge) Type() Type { return TypeChallenge }

// Type returns TypeAuth.
func (*Auth) Type() Type { return TypeAuth }

// Type returns TypeWelcome.
func (*Welcome) Type() Type { return TypeWelcome }

// Type returns TypeDataAttached.
func (*DataAttached) Type() Type { return TypeDataAttached }

// Type returns TypeListVolumes.
func (*ListVolumes) Type() Type { return TypeListVolumes }

// Type returns TypeVolumeList.
func (*VolumeList) Type() Type { return TypeVolumeList }

// Type returns TypeStatVolume.
func (*StatVolume) Type() Type { return TypeStatVolume }

// Type returns TypeVolumeInfo.
func (*VolumeInfo) Type() Type { return TypeVolumeInfo }

// Type returns TypeRead.
func (*Read) Type() Type { return TypeRead }

// Type returns TypeExtent.
func (*Extent) Type() Type { return TypeExtent }

// Type returns TypeReadDone.
func (*ReadDone) Type() Type { return TypeReadDone }

// Type returns TypeError.
func (*Error) Type() Type { return TypeError }

// Type returns TypeCancel.
func (*Cancel) Type() Type { return TypeCancel }

// Type returns TypePing.
func (*Ping) Type() Type { return TypePing }

// Type returns TypePong.
func (*Pong) Type() Type { return TypePong }

// Type returns TypeGoodbye.
func (*Goodbye) Type() Type { return TypeGoodbye }

// Type returns TypePutVolume.
func (*PutVolume) Type() Type { return TypePutVolume }

// Type returns TypePutAck.
func (*PutAck) Type() Type { return TypePutAck }

// Type returns TypePutData.
func (*PutData) Type() Type { return TypePutData }

// Type returns TypePutCommit.
func (*PutCommit) Type() Type { return TypePutCommit }

// Type returns TypePutAbort.
func (*PutAbort) Type() Type { return TypePutAbort }

// Type returns TypePutDone.
func (*PutDone) Type() Type { return TypePutDone }

// Type returns TypePutError.
func (*PutError) Type() Type { return TypePutError }
