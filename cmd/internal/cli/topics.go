package cli

import "strings"

// Topics returns the help topics of prog ("blockd" or "blockcat"): the
// texts `PROG help TOPIC` prints and the man page's later sections. The
// two programs share them, each worded for its side where they differ.
func Topics(prog string) []Topic {
	server := prog == "blockd"
	pick := func(blockd, blockcat string) string {
		if server {
			return blockd
		}
		return blockcat
	}
	devmem := `devmem: payload over Linux device-memory TCP

--devmem picks the data path, on both binaries: auto (the default: devmem
when everything below holds, else tcp, with the reason in the result, the
log and the summary), off, require (fail instead of falling back), and
emulate (the software NIC: devmem's kernel interfaces emulated over ordinary
sockets, labelled devmem-emulated in every output; for trying the path and
for tests).

devmem needs:
  - Linux 6.12 or later with CONFIG_NET_DEVMEM for receiving, 6.16 for
    sending;
  - a NIC whose driver supports it (gve, bnxt_en, mlx5, fbnic) with header
    split (ethtool -G IF tcp-data-split on), ntuple flow steering
    (ethtool -K IF ntuple on) and at least two RX queues; loopback and
    veth cannot carry devmem;
  - CAP_NET_ADMIN to bind a dmabuf for receiving (sending needs none);
  - a provider that exports a dmabuf: udmabuf or gpu.
` + pick(`
blockd sends from a TX pool in the provider --tx-provider names (udmabuf
by default, --tx-pool bytes), started only when the NIC qualifies; with a
wildcard --listen address, --devmem-if names the NIC.
`, `
blockcat receives into the memory --provider names (gpu or udmabuf; host
memory cannot be bound). Run with CAP_NET_ADMIN, it sets up the NIC itself
(header split, ntuple, a flow rule per data connection, RSS kept off the
devmem queue) and restores it on exit.
`) + `
'` + prog + ` doctor' names what is missing on this machine, with a fix for each
failing check. More: docs/devmem.md and docs/nic-setup.md.`

	verify := `verify: how the bytes are checked

Every volume stores a CRC-32C per extent, and per block, computed when it
was written.
` + pick(`
blockd sends a client those stored CRCs, never ones recomputed from the
disk; for part of an extent it combines the block CRCs and checks the
blocks at the edges, and bytes that no longer match on disk are refused
(corrupt) instead of sent.

  blockd volume inspect NAME --verify   re-reads a volume against its CRCs
  blockd catalog check --verify         re-reads every volume
  blockd scrub                          checks and rebuilds a striped volume
`, `
blockcat get checks each extent that lands against the stored CRC:
  (default)     wherever the path allows: always over tcp; under devmem where
                the provider can checksum its memory; an extent that cannot
                be checked is counted unverified, never passed as checked
  --verify      every extent; the get fails if one cannot be checked
  --no-verify   none, to measure the raw data path (results say so)

The summary and --json count verified and unverified extents. A striped
volume's shards are always checked against its manifest, and a bad shard is
rebuilt from parity.
`)

	env := `environment: variables ` + prog + ` reads

` + pick(`  BLOCKXFER_DATA        the data directory when --data is not given
  BLOCKXFER_KEY_FILE    the key file when --key-file is not given (serve:
                        else DATA/blockd.key)
`, `  BLOCKXFER_SERVER      the server when a command's SERVER is left out:
                        BLOCKXFER_SERVER=host blockcat get VOLUME
  BLOCKXFER_KEY_FILE    the key file when --key-file is not given
`) + `  BLOCKXFER_PLUGIN_DIR  the plugin directory when --plugin-dir is not given
                        (else ` + prog + `'s own directory if it holds a plugin,
                        else ../lib/blockxfer/plugins beside it)
  BLOCKXFER_GPU_DEVICE  the CUDA device the gpu provider uses (default 0)
  BLOCKXFER_LIBCUDA     the gpu provider's driver library (default libcuda.so.1)`

	exit := `exit-status: what ` + prog + `'s exit status means

  0    success; also -h, help and version
  1    failure: the error is printed on stderr, one line naming the fix
  2    a mistake on the command line (unknown flag, bad value, wrong
       arguments): printed once, with the command to run for help
` + pick(`
blockd serve exits 0 when SIGTERM or SIGINT stopped it after every read in
flight finished, and 1 when --shutdown-timeout cut reads or uploads off.
blockd catalog check and blockd doctor exit 1 when a check failed, after
reporting every check.`, `  130  stopped by SIGINT (Ctrl-C)
  143  stopped by SIGTERM

A get stopped by a signal or a failure leaves -o FILE as it was and keeps
the bytes that landed for --continue. blockcat doctor exits 1 when a check
failed, after reporting every check.`)

	var out []Topic
	for _, t := range []struct{ name, text string }{
		{"devmem", devmem}, {"verify", verify}, {"environment", env}, {"exit-status", exit},
	} {
		title, body, _ := strings.Cut(t.text, "\n\n")
		_, summary, _ := strings.Cut(title, ": ")
		out = append(out, Topic{Name: t.name, Summary: summary, Text: body})
	}
	return out
}
