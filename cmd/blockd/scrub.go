package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"time"

	"github.com/blockxfer/blockxfer/cmd/internal/cli"
	"github.com/blockxfer/blockxfer/ec"
	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers/hostmem"
	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport/tcp"
)

const scrubUsage = "(--manifest FILE | --etcd E VOLUME) [--spare ADDR,...] [--json]"

// scrubFlags are the flags of `blockd scrub`.
type scrubFlags struct {
	src      ec.ManifestSource // --manifest or --etcd, and VOLUME
	spares   []string          // --spare
	keyFile  string
	timeout  time.Duration
	logLevel string
	asJSON   bool
}

// parseScrubFlags parses and checks the arguments of `blockd scrub`.
func parseScrubFlags(args []string, stderr io.Writer) (*scrubFlags, error) {
	var f scrubFlags
	fs := flag.NewFlagSet("blockd scrub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.src.File, "manifest", "", "manifest file of the striped volume (rewritten after a repair)")
	fs.StringVar(&f.src.Etcd, "etcd", "", "etcd endpoints of the cluster catalog")
	spares := fs.String("spare", "", "comma-separated addresses of servers that may take a lost server's shards (default with --etcd: registered servers not in the volume)")
	fs.StringVar(&f.keyFile, "key-file", "", "pre-shared key `FILE` (default $"+cli.KeyEnv+")")
	fs.DurationVar(&f.timeout, "timeout", 0, "give up after this long (0: no limit)")
	fs.StringVar(&f.logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	fs.BoolVar(&f.asJSON, "json", false, "print the report as JSON")
	pos, err := cli.ParseRange(fs, args, 0, math.MaxInt, scrubUsage)
	switch {
	case err != nil:
		return nil, cli.UsageErr(err)
	case (f.src.File == "") == (f.src.Etcd == ""):
		return nil, cli.UsageErr(errors.New("give exactly one of --manifest and --etcd"))
	case f.src.Etcd != "" && len(pos) != 1, f.src.File != "" && len(pos) > 1:
		return nil, cli.UsageErr(errors.New("usage: blockd scrub " + scrubUsage))
	}
	if len(pos) == 1 {
		f.src.Volume = pos[0]
	}
	sp, err := cli.AddrList(*spares) // HOST means HOST:7070
	if err != nil {
		return nil, cli.UsageErr(fmt.Errorf("--spare: %w", err))
	}
	f.spares = cli.SplitList(sp)
	return &f, nil
}

// scrub runs `blockd scrub`: it checks every shard of a striped volume
// against its manifest and rebuilds lost or corrupt shards over the network
// (servers keep their catalogs locked while serving), then stores the
// updated manifest.
//
//	blockd scrub (--manifest FILE | --etcd E VOLUME) [--spare ADDR,...] [--json]
func scrub(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parseScrubFlags(args, stderr)
	if err != nil {
		return err
	}
	if f.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.timeout)
		defer cancel()
	}
	key, err := cli.LoadKey(f.keyFile)
	if err != nil {
		return err
	}
	log, err := cli.NewLogger(stderr, "text", f.logLevel)
	if err != nil {
		return cli.UsageErr(err)
	}
	man, cluster, err := ec.LoadManifest(ctx, f.src)
	if err != nil {
		return err
	}
	if cluster != nil {
		defer cluster.Close()
	}
	spares, err := cluster.Spares(ctx, man, f.spares)
	if err != nil {
		return err
	}

	p := hostmem.New()
	defer p.Close()
	fixed, rep, scrubErr := ec.Scrub(ctx, man, ec.ScrubConfig{Dial: scrubDialer(key, p, log), Provider: p, Spares: spares, Logger: log})
	if fixed != man {
		if err := ec.StoreManifest(ctx, cluster, f.src.File, fixed); err != nil {
			return errors.Join(scrubErr, fmt.Errorf("scrub %s: repaired, but the new manifest was not stored: %w", man.Name, err))
		}
	}
	if rep != nil {
		if err := printScrubReport(stdout, rep, f.src, f.asJSON); err != nil {
			return err
		}
	}
	return scrubErr
}

// scrubDialer opens the scrubber's sessions: TCP into p, every extent
// checked against its CRC-32C.
func scrubDialer(key []byte, p memory.Provider, log *slog.Logger) ec.Dialer {
	return func(ctx context.Context, s ec.ManifestServer) (*engine.Session, error) {
		return engine.Dial(ctx, s.Addr, engine.Config{Key: key, Provider: p, Transport: &tcp.Transport{},
			DataConns: 2, Verify: engine.VerifyRequire, Name: "blockd-scrub", DialTimeout: 10 * time.Second, Logger: log})
	}
}

// scrubJSON is what `blockd scrub --json` prints (docs/json.md).
type scrubJSON struct {
	Volume        string            `json:"volume"`
	Manifest      string            `json:"manifest"` // file, or etcd:ENDPOINTS
	Generation    uint64            `json:"generation"`
	CheckedShards int64             `json:"checked_shards"`
	Bad           []ec.ShardFault   `json:"bad"`
	Repairs       []scrubRepairJSON `json:"repairs"`
}

// scrubRepairJSON is one server's repair: Replaced is the lost server it
// took the place of, nil if it was repaired in place.
type scrubRepairJSON struct {
	Server        ec.ManifestServer  `json:"server"`
	Replaced      *ec.ManifestServer `json:"replaced"`
	RebuiltShards int64              `json:"rebuilt_shards"`
}

// printScrubReport prints what scrub found and did, as JSON or as text.
func printScrubReport(w io.Writer, rep *ec.ScrubReport, src ec.ManifestSource, asJSON bool) error {
	if asJSON {
		j := scrubJSON{Volume: rep.Volume, Manifest: src.File, Generation: rep.Generation, CheckedShards: rep.Checked,
			Bad: append([]ec.ShardFault{}, rep.Bad...), Repairs: []scrubRepairJSON{}}
		if src.File == "" {
			j.Manifest = "etcd:" + src.Etcd
		}
		for _, r := range rep.Repairs {
			j.Repairs = append(j.Repairs, scrubRepairJSON{Server: r.Server, Replaced: r.Replaced, RebuiltShards: r.Rebuilt})
		}
		return cli.WriteJSON(w, j)
	}
	fmt.Fprintf(w, "scrubbed %s: %d shards checked, %d bad, %d shard volumes rebuilt, generation %d\n",
		rep.Volume, rep.Checked, len(rep.Bad), len(rep.Repairs), rep.Generation)
	for _, b := range rep.Bad {
		fmt.Fprintf(w, "  bad: stripe %d %s\n", b.Stripe, b.String())
	}
	for _, r := range rep.Repairs {
		line := fmt.Sprintf("  rebuilt %d shards onto %s (%s), shard volume generation %d", r.Rebuilt, r.Server.ID, r.Server.Addr, r.Server.Generation)
		if r.Replaced != nil {
			line += fmt.Sprintf(", in place of lost %s (%s)", r.Replaced.ID, r.Replaced.Addr)
		}
		fmt.Fprintln(w, line)
	}
	return nil
}
