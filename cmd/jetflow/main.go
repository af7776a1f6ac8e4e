// Command jetflow runs workflows (DAGs of steps) reliably on NATS JetStream: a local dev
// stack with an embedded server, setup, the workflow registry, starting and inspecting runs,
// workers, and the DLQ. Run `jetflow --help` for the commands.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := safeRun(ctx, os.Args[1:])
	stop()
	code := exitCode(err)
	if err != nil && !isSilent(err) {
		fmt.Fprintln(os.Stderr, "jetflow: "+oneLine(err.Error()))
	}
	os.Exit(code)
}

// safeRun runs the CLI and turns a panic into a one-line error: users never see a stack trace.
func safeRun(ctx context.Context, args []string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("internal error: %v (please report it)", r)
		}
	}()
	return run(ctx, args, os.Stdin, os.Stdout, os.Stderr)
}
