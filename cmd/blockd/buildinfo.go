package main

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/blockxfer/blockxfer/cmd/internal/cli"
)

// buildInfo describes this binary: the version blockd serve logs and
// exports.
var buildInfo = cli.BuildInfo("blockd")

// registerBuildInfo adds blockd_build_info{version,revision,goversion} 1 to
// reg.
func registerBuildInfo(reg prometheus.Registerer) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "blockd_build_info",
		Help: "The blockd build serving (1): module version, VCS revision (+dirty) and Go version.",
	}, []string{"version", "revision", "goversion"})
	g.WithLabelValues(buildInfo.Version, buildInfo.Rev(), buildInfo.GoVersion).Set(1)
	reg.MustRegister(g)
}

// defaultPorts gives --listen and --advertise the default port when they
// name no port, and checks them.
func (c *serveConfig) defaultPorts() error {
	var err error
	if c.listen, err = cli.ServerAddr(c.listen); err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	if c.cluster.advertise != "" {
		if c.cluster.advertise, err = cli.ServerAddr(c.cluster.advertise); err != nil {
			return fmt.Errorf("--advertise: %w", err)
		}
	}
	return nil
}
