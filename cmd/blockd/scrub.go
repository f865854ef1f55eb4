package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/blockxfer/blockxfer/cmd/internal/cli"
	"github.com/blockxfer/blockxfer/ec"
	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers/hostmem"
	"github.com/blockxfer/blockxfer/transport/tcp"
)

// scrub runs `blockd scrub`: it checks every shard of a striped volume
// against its manifest and rebuilds lost or corrupt shards over the network
// (servers keep their catalogs locked while serving), then stores the
// updated manifest.
//
//	blockd scrub (--manifest FILE | --etcd E VOLUME) [--spare ADDR,...] [--json]
func scrub(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("blockd scrub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("manifest", "", "manifest file of the striped volume (rewritten after a repair)")
	etcd := fs.String("etcd", "", "etcd endpoints of the cluster catalog")
	spares := fs.String("spare", "", "comma-separated addresses of servers that may take a lost server's shards (default with --etcd: registered servers not in the volume)")
	keyFile := fs.String("key-file", "", "pre-shared key file (default $"+cli.KeyEnv+")")
	timeout := fs.Duration("timeout", 0, "give up after this long (0: no limit)")
	logLevel := fs.String("log-level", "warn", "log level: debug, info, warn, error")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	var pos []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			return cli.UsageErr(err)
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	switch {
	case (*file == "") == (*etcd == ""):
		return cli.UsageErr(errors.New("give exactly one of --manifest and --etcd"))
	case *etcd != "" && len(pos) != 1, *file != "" && len(pos) > 1:
		return cli.UsageErr(errors.New("usage: blockd scrub (--manifest FILE | --etcd E VOLUME) [--spare ADDR,...] [--json]"))
	}
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	key, err := cli.LoadKey(*keyFile)
	if err != nil {
		return err
	}
	log, err := cli.NewLogger(stderr, "text", *logLevel)
	if err != nil {
		return cli.UsageErr(err)
	}

	var man *ec.Manifest
	var cluster *ec.Cluster
	var spareList []ec.ManifestServer
	for _, a := range strings.Split(*spares, ",") {
		if a = strings.TrimSpace(a); a != "" {
			spareList = append(spareList, ec.ManifestServer{ID: a, Addr: a})
		}
	}
	if *file != "" {
		if man, err = ec.ReadManifestFile(*file); err != nil {
			return err
		}
		if len(pos) == 1 && pos[0] != man.Name {
			return fmt.Errorf("manifest %s is for volume %q, not %q", *file, man.Name, pos[0])
		}
	} else {
		if cluster, err = ec.Connect(ctx, *etcd); err != nil {
			return err
		}
		defer cluster.Close()
		if man, err = cluster.GetManifest(ctx, pos[0]); err != nil {
			return err
		}
		reg, err := cluster.Servers(ctx)
		if err != nil {
			return err
		}
		for i, s := range spareList {
			for _, r := range reg {
				if r.Addr == s.Addr {
					spareList[i].ID = r.ID
				}
			}
		}
		if *spares == "" {
			for _, r := range reg {
				if !slices.ContainsFunc(man.Servers, func(s ec.ManifestServer) bool { return s.ID == r.ID }) {
					spareList = append(spareList, r)
				}
			}
		}
	}

	p := hostmem.New()
	defer p.Close()
	dial := func(ctx context.Context, s ec.ManifestServer) (*engine.Session, error) {
		return engine.Dial(ctx, s.Addr, engine.Config{Key: key, Provider: p, Transport: &tcp.Transport{},
			DataConns: 2, Verify: engine.VerifyRequire, Name: "blockd-scrub", DialTimeout: 10 * time.Second, Logger: log})
	}
	fixed, rep, scrubErr := ec.Scrub(ctx, man, ec.ScrubConfig{Dial: dial, Provider: p, Spares: spareList, Logger: log})
	if fixed != man {
		var err error
		if cluster != nil {
			err = cluster.PutManifest(ctx, fixed)
		} else {
			err = ec.WriteManifestFile(*file, fixed)
		}
		if err != nil {
			return errors.Join(scrubErr, fmt.Errorf("scrub %s: repaired, but the new manifest was not stored: %w", man.Name, err))
		}
	}
	if rep != nil {
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(rep); err != nil {
				return err
			}
		} else {
			fmt.Fprintf(stdout, "scrubbed %s: %d shards checked, %d bad, %d shard volumes rebuilt, generation %d\n",
				rep.Volume, rep.Checked, len(rep.Bad), len(rep.Repairs), rep.Generation)
			for _, b := range rep.Bad {
				fmt.Fprintf(stdout, "  bad: stripe %d %s\n", b.Stripe, b.String())
			}
			for _, r := range rep.Repairs {
				line := fmt.Sprintf("  rebuilt %d shards onto %s (%s), shard volume generation %d", r.Rebuilt, r.Server.ID, r.Server.Addr, r.Server.Generation)
				if r.Replaced != nil {
					line += fmt.Sprintf(", in place of lost %s (%s)", r.Replaced.ID, r.Replaced.Addr)
				}
				fmt.Fprintln(stdout, line)
			}
		}
	}
	return scrubErr
}
