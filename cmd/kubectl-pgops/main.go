// Command kubectl-pgops is the `kubectl pgops` plugin: put it on your PATH and run
// `kubectl pgops --help`. See pkg/plugin.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/pgops/pgops/pkg/plugin"
)

func main() {
	ctx, stop := plugin.SignalContext(context.Background())
	defer stop()
	cmd := plugin.NewCommand(plugin.Env{Streams: plugin.Streams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}})
	err := cmd.ExecuteContext(ctx)
	var code plugin.ExitCode
	switch {
	case errors.As(err, &code):
		os.Exit(int(code))
	case err != nil:
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
