// Package agent is the local agent of blockxfer: a long-running process
// (blockcat agent) that owns the memory providers and keeps engine sessions
// to blockd servers warm, and serves applications on the same host over a
// unix socket. An application registers memory it owns (a sealed memfd,
// passed by SCM_RIGHTS; or CUDA device memory, by IPC handle or VMM fd,
// which the GPU provider of its device imports: [Config.Device]), submits
// reads of volume ranges into it, and waits for their completions; it
// needs no privilege of its own and no Go.
//
// The local protocol, one JSON object per SOCK_SEQPACKET message, is
// specified in docs/agent-protocol.md; [Decode] parses what a client sends.
//
// # Ownership
//
// Each connection owns its registrations and its reads. When it ends (the
// application closed it, exited or was killed), its reads are cancelled and
// waited for, and its registrations released (unmapped, their device
// imports closed): nothing of it outlives it in the agent. Received fds are
// closed as soon as the memory is imported.
//
// # Permission
//
// Access to the socket is the permission: [Listen] creates it with the
// configured mode (0660 by default), and each connection's peer
// credentials (SO_PEERCRED) are logged and, with [Config.AllowUIDs],
// checked.
package agent
