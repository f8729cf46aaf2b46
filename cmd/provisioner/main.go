// Command provisioner runs the pgops provisioner: it turns each Postgres into an auth
// Secret, a StatefulSet of PostgreSQL pods and Services, and reports the database's status.
//
// Provisioner flags, besides the shared operator flags:
//
//	--image-registry        repository of PostgreSQL images (default docker.io/library/postgres)
//	--image-tag-template    Go template for the tag, over .Version ("16.4"), .Major ("16") and
//	                        .Minor ("4" or ""); default "{{.Version}}". spec.version must match
//	                        ^[0-9]+(\.[0-9]+)?$ with a major version from 13 to 18.
//	--agent-image           the operator image of this release, from which every database pod's
//	                        init container installs the pgops agent (default
//	                        ghcr.io/pgops/pgops:<this release>); set it to where the operators'
//	                        own image comes from (a private registry, a mirror)
//	--database-host-mode    how the status check reaches a primary Service: ClusterIP (default;
//	                        works out of cluster where ClusterIPs are routable) or DNS
//	                        (<name>.<namespace>.svc, in cluster)
//	--health-check-timeout  bound of one SQL login check of a primary (default 5s)
//	--status-period         how often each Postgres is re-examined to keep its phase honest (default 15s)
package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/pgops/pgops/pkg/controller/provisioner"
	"github.com/pgops/pgops/pkg/dbaddr"
	"github.com/pgops/pgops/pkg/operator"
)

// provisionerFlags are the flags only the provisioner takes.
type provisionerFlags struct {
	imageRegistry      string
	imageTagTemplate   string
	agentImage         string
	databaseHostMode   string
	healthCheckTimeout time.Duration
	statusPeriod       time.Duration
}

var flags = provisionerFlags{
	imageRegistry:      provisioner.DefaultImageRegistry,
	imageTagTemplate:   provisioner.DefaultImageTagTemplate,
	agentImage:         provisioner.DefaultAgentImage,
	databaseHostMode:   string(dbaddr.ModeClusterIP),
	healthCheckTimeout: provisioner.DefaultHealthCheckTimeout,
	statusPeriod:       provisioner.DefaultStatusPeriod,
}

func main() {
	fs := flag.CommandLine
	fs.StringVar(&flags.imageRegistry, "image-registry", flags.imageRegistry,
		"Repository of the PostgreSQL images; the image is <registry>:<tag>.")
	fs.StringVar(&flags.imageTagTemplate, "image-tag-template", flags.imageTagTemplate,
		"Go template of the image tag, over .Version (spec.version, e.g. 16.4), .Major and .Minor. spec.version must be MAJOR or MAJOR.MINOR with MAJOR from 13 to 18.")
	fs.StringVar(&flags.agentImage, "agent-image", flags.agentImage,
		"The operator image of this release, from which each database pod's init container installs the pgops agent; set it to where the operators' own image comes from.")
	fs.StringVar(&flags.databaseHostMode, "database-host-mode", flags.databaseHostMode, dbaddr.FlagUsage)
	fs.DurationVar(&flags.healthCheckTimeout, "health-check-timeout", flags.healthCheckTimeout,
		"Timeout of one SQL login check of a primary.")
	fs.DurationVar(&flags.statusPeriod, "status-period", flags.statusPeriod,
		"How often each Postgres is re-examined so its phase stays honest.")
	operator.Main("pgops-provisioner", run)
}

func run(ctx context.Context, cfg *rest.Config, opts *operator.Options, health *operator.Health) error {
	images, err := provisioner.NewImageMapper(flags.imageRegistry, flags.imageTagTemplate)
	if err != nil {
		return fmt.Errorf("--image-registry/--image-tag-template: %w", err)
	}
	if flags.agentImage == "" || strings.ContainsAny(flags.agentImage, " \t\n") {
		return fmt.Errorf("--agent-image %q: must name the operator image", flags.agentImage)
	}
	hostMode, err := dbaddr.ParseMode(flags.databaseHostMode)
	if err != nil {
		return fmt.Errorf("--database-host-mode: %w", err)
	}
	if flags.statusPeriod < time.Second {
		return fmt.Errorf("--status-period must be at least 1s, got %s", flags.statusPeriod)
	}

	kubeClient, pgopsClient, err := operator.NewClients(cfg)
	if err != nil {
		return err
	}
	kubeInformers := operator.NewOwnedKubeInformerFactory(kubeClient, opts)
	pgopsInformers := operator.NewPgopsInformerFactory(pgopsClient, opts)

	controller, err := provisioner.New(ctx, kubeClient, pgopsClient, kubeInformers, pgopsInformers, provisioner.Config{
		Images:        images,
		AgentImage:    flags.agentImage,
		HealthChecker: &provisioner.SQLHealthChecker{HostMode: hostMode, Timeout: flags.healthCheckTimeout},
		StatusPeriod:  flags.statusPeriod,
		Recorder:      operator.NewEventRecorder(ctx, kubeClient, provisioner.ControllerName),
	})
	if err != nil {
		return err
	}

	unregister, err := operator.RegisterCollector(controller.MetricsCollector())
	if err != nil {
		return err
	}
	defer unregister()
	kubeInformers.Start(ctx.Done())
	pgopsInformers.Start(ctx.Done())
	defer kubeInformers.Shutdown()
	defer pgopsInformers.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), controller.HasSynced) {
		return fmt.Errorf("informer caches did not sync")
	}
	health.SetReady()
	klog.InfoS("Caches synced; starting workers", "workers", opts.Workers)
	return controller.Run(ctx, opts.Workers)
}
