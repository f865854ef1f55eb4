package blockproto

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// Domain-separation labels of the two proofs. Each is followed by one zero
// byte in the MAC input, so neither input is a prefix of the other.
const (
	clientProofLabel = "blockxfer v1 client proof"
	serverProofLabel = "blockxfer v1 server proof"
)

// ClientProof returns the MAC the client sends in [Auth]:
//
//	HMAC-SHA256(key, "blockxfer v1 client proof" || 0x00 ||
//	            clientNonce || serverNonce || u64be(session))
//
// where clientNonce is Hello.Nonce, serverNonce is Challenge.Nonce and
// session is Challenge.SessionID. key is the pre-shared key; it should be at
// least 32 random bytes.
func ClientProof(key []byte, clientNonce, serverNonce [NonceLen]byte, session uint64) [MACLen]byte {
	return proof(key, clientProofLabel, clientNonce, serverNonce, session)
}

// ServerProof returns the MAC the server sends in [Welcome]. It is built like
// [ClientProof] with the label "blockxfer v1 server proof", so neither side
// can answer with a proof it was sent.
func ServerProof(key []byte, clientNonce, serverNonce [NonceLen]byte, session uint64) [MACLen]byte {
	return proof(key, serverProofLabel, clientNonce, serverNonce, session)
}

func proof(key []byte, label string, clientNonce, serverNonce [NonceLen]byte, session uint64) [MACLen]byte {
	msg := make([]byte, 0, len(label)+1+2*NonceLen+8)
	msg = append(msg, label...)
	msg = append(msg, 0)
	msg = append(msg, clientNonce[:]...)
	msg = append(msg, serverNonce[:]...)
	msg = binary.BigEndian.AppendUint64(msg, session)

	h := hmac.New(sha256.New, key)
	h.Write(msg)
	var out [MACLen]byte
	h.Sum(out[:0])
	return out
}

// VerifyProof reports whether the proofs a and b are equal, in time that
// does not depend on where they differ.
func VerifyProof(a, b [MACLen]byte) bool {
	return hmac.Equal(a[:], b[:])
}

// NewNonce returns a fresh nonce from crypto/rand for Hello or Challenge.
func NewNonce() ([NonceLen]byte, error) {
	var n [NonceLen]byte
	if _, err := rand.Read(n[:]); err != nil {
		return n, fmt.Errorf("blockproto: new nonce: %w", err)
	}
	return n, nil
}

// NewToken returns a fresh data-connection token from crypto/rand for
// Welcome.Tokens.
func NewToken() ([TokenLen]byte, error) {
	var t [TokenLen]byte
	if _, err := rand.Read(t[:]); err != nil {
		return t, fmt.Errorf("blockproto: new token: %w", err)
	}
	return t, nil
}
