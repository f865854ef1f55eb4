// Package providers runs memory providers as plugin processes: the provider
// plugin protocol on hashicorp/go-plugin with gRPC, the host side (Discover,
// Load, Plugin) and the plugin side (Serve).
//
// A Plugin implements memory.Provider, so the engine uses a plugin like the
// built-in host-memory provider (package hostmem). Four channels join the
// two processes:
//
//   - control: the providerpb.Provider gRPC service, with the caller's ctx
//     on every call and the engine's error sentinels carried across;
//   - file descriptors: a side SOCK_SEQPACKET socketpair (fd 3 in the
//     plugin) carrying SCM_RIGHTS records tagged with a request id — dmabuf
//     fds to the host, staging memfds to the plugin;
//   - bulk bytes: staging memfds mapped by both processes; CopyIn and
//     ReadBack carry offsets into them, never the bytes;
//   - the data plane: a submission/completion ring in a memfd mapped by
//     both processes, with a futex doorbell each way. CopyIn, Gather,
//     ReadBack and Checksum travel on it as fixed-size descriptors, many in
//     flight at once, when the plugin offers it (plugins built with Serve
//     do); otherwise they are RPCs.
//
// A host-mappable plugin (HostMapper) also sends each buffer's memfd, which
// the host maps: the engine then receives straight into plugin memory.
//
// # Lifecycle
//
// Load starts a plugin in its own process group with Pdeathsig SIGKILL, and
// the plugin exits when its side socket reaches EOF, so plugins do not
// outlive their host. If a plugin dies, its calls fail with errors wrapping
// ErrPluginExited (naming the plugin, pid and exit status), the fds the
// host received from it are closed, and other providers are unaffected.
//
// # Writing a plugin
//
// Implement memory.Provider and call Serve from main; see providers/example
// and docs/providers.md. Optional interfaces: Versioner,
// UnusableReasoner, StagingRegistrar, HostMapper. A plugin must never write to stdout,
// which carries the go-plugin handshake; Serve logs hclog JSON to stderr,
// at the level in BLOCKXFER_PROVIDER_LOG.
//
// # Platform
//
// Plugins need Linux (memfd, SCM_RIGHTS, Pdeathsig). Elsewhere Load and
// Serve fail with ErrNotSupported.
package providers
