// Command ops-manager runs the pgops ops-manager: it carries out PostgresOpsRequests,
// such as RotateAuth, as crash-safe state machines.
package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/pgops/pgops/pkg/controller/opsmanager"
	"github.com/pgops/pgops/pkg/credential"
	"github.com/pgops/pgops/pkg/dbaddr"
	"github.com/pgops/pgops/pkg/operator"
)

var (
	hostMode       = flag.String("database-host-mode", string(dbaddr.ModeClusterIP), dbaddr.FlagUsage)
	sslMode        = flag.String("database-sslmode", "prefer", "libpq sslmode for connections to databases: disable, allow, prefer, require, verify-ca or verify-full.")
	connectTimeout = flag.Duration("database-connect-timeout", 10*time.Second, "Timeout for each connection to a database.")
	passwordLength = flag.Int("password-length", credential.DefaultPasswordLength,
		fmt.Sprintf("Length of generated passwords, %d to %d (the range of passwords pods accept).", credential.MinPodPasswordLength, credential.MaxPodPasswordLength))
)

func main() { operator.Main(opsmanager.ControllerName, run) }

func run(ctx context.Context, cfg *rest.Config, opts *operator.Options, health *operator.Health) error {
	mode, err := dbaddr.ParseMode(*hostMode)
	if err != nil {
		return fmt.Errorf("--database-host-mode: %w", err)
	}
	if *passwordLength < credential.MinPodPasswordLength || *passwordLength > credential.MaxPodPasswordLength {
		return fmt.Errorf("--password-length %d: must be %d to %d", *passwordLength, credential.MinPodPasswordLength, credential.MaxPodPasswordLength)
	}
	kubeClient, pgopsClient, err := operator.NewClients(cfg)
	if err != nil {
		return err
	}
	// Only the objects the operators own are cached: never every Secret or Pod.
	kubeInformers := operator.NewOwnedKubeInformerFactory(kubeClient, opts)
	pgopsInformers := operator.NewPgopsInformerFactory(pgopsClient, opts)
	recorder := operator.NewEventRecorder(ctx, kubeClient, opsmanager.ControllerName)

	controller, err := opsmanager.New(kubeClient, pgopsClient, kubeInformers, pgopsInformers, recorder,
		opsmanager.PostgreSQL{}, opsmanager.Config{
			HostMode: mode, PasswordLength: *passwordLength, SSLMode: *sslMode, ConnectTimeout: *connectTimeout,
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
	go func() {
		if cache.WaitForCacheSync(ctx.Done(), controller.HasSynced) {
			health.SetReady()
		}
	}()
	return controller.Run(ctx, opts.Workers)
}
