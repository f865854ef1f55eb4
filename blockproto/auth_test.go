package blockproto

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"testing"
)

var (
	testKey = []byte("0123456789abcdef0123456789abcdef")
	testCN  = [NonceLen]byte(fill(NonceLen, 0x10))
	testSN  = [NonceLen]byte(fill(NonceLen, 0x80))
)

// TestProofConstruction recomputes both proofs from the construction written
// in docs/protocol.md.
func TestProofConstruction(t *testing.T) {
	const session = 0x0102030405060708
	for _, tt := range []struct {
		label string
		f     func([]byte, [NonceLen]byte, [NonceLen]byte, uint64) [MACLen]byte
	}{
		{"blockxfer v1 client proof", ClientProof},
		{"blockxfer v1 server proof", ServerProof},
	} {
		msg := append([]byte(tt.label), 0)
		msg = append(msg, testCN[:]...)
		msg = append(msg, testSN[:]...)
		msg = binary.BigEndian.AppendUint64(msg, session)
		h := hmac.New(sha256.New, testKey)
		h.Write(msg)
		want := h.Sum(nil)
		got := tt.f(testKey, testCN, testSN, session)
		if !hmac.Equal(got[:], want) {
			t.Errorf("%s: got %x, want %x", tt.label, got, want)
		}
	}
}

// TestProofVector pins one known answer so a second implementation can check
// itself against the same numbers.
func TestProofVector(t *testing.T) {
	got := ClientProof(testKey, testCN, testSN, 42)
	if h := hex.EncodeToString(got[:]); h != clientVector {
		t.Errorf("ClientProof = %s, want %s", h, clientVector)
	}
	got = ServerProof(testKey, testCN, testSN, 42)
	if h := hex.EncodeToString(got[:]); h != serverVector {
		t.Errorf("ServerProof = %s, want %s", h, serverVector)
	}
}

func TestProofsDiffer(t *testing.T) {
	base := ClientProof(testKey, testCN, testSN, 7)
	otherCN, otherSN := testCN, testSN
	otherCN[NonceLen-1] ^= 1
	otherSN[0] ^= 0x80
	tests := []struct {
		name string
		p    [MACLen]byte
	}{
		{"server proof", ServerProof(testKey, testCN, testSN, 7)},
		{"other key", ClientProof([]byte("another key entirely, 32 bytes!!"), testCN, testSN, 7)},
		{"key one byte longer", ClientProof(append(testKey[:len(testKey):len(testKey)], 1), testCN, testSN, 7)},
		{"other client nonce", ClientProof(testKey, otherCN, testSN, 7)},
		{"other server nonce", ClientProof(testKey, testCN, otherSN, 7)},
		{"nonces swapped", ClientProof(testKey, testSN, testCN, 7)},
		{"other session", ClientProof(testKey, testCN, testSN, 8)},
		{"session high bit", ClientProof(testKey, testCN, testSN, 7|1<<63)},
	}
	seen := map[[MACLen]byte]string{base: "base"}
	for _, tt := range tests {
		if prev, dup := seen[tt.p]; dup {
			t.Errorf("%s gives the same proof as %s", tt.name, prev)
		}
		seen[tt.p] = tt.name
		if VerifyProof(base, tt.p) {
			t.Errorf("VerifyProof accepts %s for the client proof", tt.name)
		}
	}
	if again := ClientProof(testKey, testCN, testSN, 7); again != base || !VerifyProof(base, again) {
		t.Errorf("ClientProof is not deterministic or VerifyProof rejects equal proofs")
	}
}

func TestVerifyProofEveryByte(t *testing.T) {
	p := ServerProof(testKey, testCN, testSN, 1)
	if !VerifyProof(p, p) {
		t.Fatal("VerifyProof(p, p) = false")
	}
	for i := range MACLen {
		q := p
		q[i] ^= 0x01
		if VerifyProof(p, q) {
			t.Errorf("VerifyProof ignores byte %d", i)
		}
	}
}

func TestNewNonceAndToken(t *testing.T) {
	n1, err1 := NewNonce()
	n2, err2 := NewNonce()
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if n1 == n2 || n1 == ([NonceLen]byte{}) {
		t.Errorf("NewNonce returned %x then %x", n1, n2)
	}
	seen := map[[TokenLen]byte]bool{}
	for range MaxDataConns {
		tok, err := NewToken()
		if err != nil {
			t.Fatal(err)
		}
		if seen[tok] || tok == ([TokenLen]byte{}) {
			t.Fatalf("NewToken repeated or returned zero: %x", tok)
		}
		seen[tok] = true
	}
}

// Known answers for testKey, testCN, testSN and session 42.
const (
	clientVector = "9f4048468174ae4bd12c336bc292944d5fc3f69a2af0a303e076c85f6a7b9547"
	serverVector = "a6479e20bd6c3f864a2437d3c95f1430454a264e3a414798ddefb0b339e75693"
)
