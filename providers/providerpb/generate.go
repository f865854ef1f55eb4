// Package providerpb holds the provider plugin protocol: provider.proto and
// the Go code generated from it, committed so that building needs no protoc.
//
// Regenerate after editing provider.proto (protoc from Debian's
// protobuf-compiler; the plugins installed into a throwaway GOBIN, not added
// to go.mod):
//
//	GOBIN=/tmp/pbgobin go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
//	GOBIN=/tmp/pbgobin go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
//	PATH=/tmp/pbgobin:$PATH go generate ./providers/providerpb
package providerpb

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative provider.proto
