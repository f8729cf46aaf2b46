package plugin

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"
)

// interrupted is why the context of a command ended: a signal.
type interrupted struct{ sig os.Signal }

func (i interrupted) Error() string { return "interrupted by " + i.sig.String() }

// SignalContext is a context that ends at the first SIGINT, SIGTERM, SIGHUP or SIGQUIT,
// with the signal as its cause. Commands then clean up (a passfile, a port-forward) and
// exit 128 + the signal's number, as a shell reports a process the signal ended.
func SignalContext(parent context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(parent)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	go func() {
		select {
		case sig := <-sigs:
			cancel(interrupted{sig})
		case <-ctx.Done():
		}
	}()
	return ctx, func() { signal.Stop(sigs); cancel(context.Canceled) }
}

// interruptedExitCode is the exit code for a command whose context a signal ended.
func interruptedExitCode(ctx context.Context) ExitCode {
	var i interrupted
	if errors.As(context.Cause(ctx), &i) {
		if s, ok := i.sig.(syscall.Signal); ok {
			return ExitCode(128 + int(s))
		}
	}
	return ExitCode(128 + int(syscall.SIGINT))
}
