package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/workflow"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// app holds what every command shares: the global flags and the streams.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer

	natsURL, prefix               string
	creds, nkey, user, password   string
	token, tlsCA, tlsCert, tlsKey string
	jsonOut                       bool
	verbose                       bool

	// denied is the last permissions violation NATS reported to this process.
	denied atomic.Pointer[string]
}

// run is the whole CLI: it parses args and runs one command.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if d := a.denied.Load(); err != nil && d != nil && !isSilent(err) {
		// A refused request gets no answer, so the command only saw a timeout: say why.
		return failedErr(fmt.Errorf("NATS refused this user %s (%s): use credentials whose permissions allow it", *d, oneLine(err.Error())))
	}
	if err != nil {
		var ee *exitError
		if !errors.As(err, &ee) && isCobraUsage(err) {
			return usageErr(fmt.Errorf("%s (see `jetflow --help`)", strings.Join(strings.Fields(err.Error()), " ")))
		}
	}
	return err
}

// isCobraUsage recognises cobra's own errors about commands, flags and arguments.
func isCobraUsage(err error) bool {
	s := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand", "flag needs", "invalid argument", "accepts ", "requires at least", "requires exactly", "received ", "required flag"} {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:               "jetflow",
		Short:             "Run workflows (DAGs of steps) reliably on NATS JetStream",
		Version:           version,
		SilenceUsage:      true,
		SilenceErrors:     true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageErr(fmt.Errorf("%w (see --help)", err)) })
	pf := root.PersistentFlags()
	pf.StringVar(&a.natsURL, "nats", env("NATS_URL", nats.DefaultURL), "NATS server URL(s), comma-separated (env NATS_URL)")
	pf.StringVar(&a.prefix, "prefix", env("JETFLOW_PREFIX", workflow.DefaultPrefix), "prefix of every stream, subject and bucket (env JETFLOW_PREFIX)")
	pf.StringVar(&a.creds, "creds", env("NATS_CREDS", ""), "NATS user credentials file (env NATS_CREDS)")
	pf.StringVar(&a.nkey, "nkey", env("NATS_NKEY", ""), "NATS nkey seed file (env NATS_NKEY)")
	pf.StringVar(&a.user, "user", env("NATS_USER", ""), "NATS user name (env NATS_USER)")
	pf.StringVar(&a.password, "password", env("NATS_PASSWORD", ""), "NATS password (env NATS_PASSWORD)")
	pf.StringVar(&a.token, "token", env("NATS_TOKEN", ""), "NATS auth token (env NATS_TOKEN)")
	pf.StringVar(&a.tlsCA, "tls-ca", env("NATS_CA", ""), "CA certificate file for TLS (env NATS_CA)")
	pf.StringVar(&a.tlsCert, "tls-cert", env("NATS_CERT", ""), "client certificate file for mutual TLS (env NATS_CERT)")
	pf.StringVar(&a.tlsKey, "tls-key", env("NATS_KEY", ""), "client key file for mutual TLS (env NATS_KEY)")
	pf.BoolVarP(&a.verbose, "verbose", "v", false, "log more")
	root.AddCommand(a.devCmd(), a.setupCmd(), a.workflowsCmd(), a.startCmd(), a.runsCmd(), a.schedulesCmd(), a.servicesCmd(), a.workerCmd(), a.dlqCmd(),
		a.workersCmd(), a.topCmd(), a.benchCmd())
	return root
}

// names returns the broker names for --prefix.
func (a *app) names() (workflow.Names, error) {
	n, err := workflow.NewNames(a.prefix)
	if err != nil {
		return n, usageErr(fmt.Errorf("--prefix: %w", err))
	}
	return n, nil
}

// logger logs to stderr.
func (a *app) logger() *slog.Logger {
	level := slog.LevelInfo
	if a.verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: level}))
}

// natsOptions builds connection options from the auth flags.
func (a *app) natsOptions(name string, persistent bool) ([]nats.Option, error) {
	opts := []nats.Option{nats.Name("jetflow " + name), nats.Timeout(5 * time.Second)}
	if persistent {
		opts = append(opts, nats.MaxReconnects(-1), nats.ReconnectWait(time.Second), nats.ReconnectJitter(500*time.Millisecond, time.Second))
	} else {
		opts = append(opts, nats.MaxReconnects(2), nats.ReconnectWait(200*time.Millisecond))
	}
	// nats.go's default handler writes asynchronous errors straight to os.Stderr; keep a
	// permissions violation for the command's one-line error, and log the rest (a worker
	// logs everything).
	opts = append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			s := strings.TrimPrefix(err.Error(), nats.ErrPermissionViolation.Error()+": ")
			s = strings.Replace(s, "Permissions Violation for ", "", 1)
			a.denied.Store(&s)
			if !persistent {
				return
			}
		}
		if persistent || a.verbose {
			a.logger().Error("NATS", "err", err)
		}
	}))
	if a.creds != "" {
		opts = append(opts, nats.UserCredentials(a.creds))
	}
	if a.nkey != "" {
		o, err := nats.NkeyOptionFromSeed(a.nkey)
		if err != nil {
			return nil, usageErr(fmt.Errorf("--nkey %s: %w", a.nkey, err))
		}
		opts = append(opts, o)
	}
	if a.user != "" {
		opts = append(opts, nats.UserInfo(a.user, a.password))
	}
	if a.token != "" {
		opts = append(opts, nats.Token(a.token))
	}
	if a.tlsCA != "" {
		opts = append(opts, nats.RootCAs(a.tlsCA))
	}
	if a.tlsCert != "" || a.tlsKey != "" {
		if a.tlsCert == "" || a.tlsKey == "" {
			return nil, usageErr(errors.New("--tls-cert and --tls-key go together"))
		}
		opts = append(opts, nats.ClientCert(a.tlsCert, a.tlsKey))
	}
	return opts, nil
}

// conn is a connection with JetStream and the store.
type conn struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	store *checkpoint.Store
	names workflow.Names
}

func (c *conn) Close() { c.nc.Close() }

// connect connects to NATS; withStore also binds the buckets (the install must be set up).
func (a *app) connect(ctx context.Context, name string, persistent, withStore bool) (*conn, error) {
	names, err := a.names()
	if err != nil {
		return nil, err
	}
	opts, err := a.natsOptions(name, persistent)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(a.natsURL, opts...)
	if err != nil {
		return nil, natsErr(a.natsURL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, failedErr(err)
	}
	c := &conn{nc: nc, js: js, names: names}
	if withStore {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		c.store, err = checkpoint.Open(sctx, js, names)
		if err != nil {
			nc.Close()
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
				return nil, failedErr(fmt.Errorf("NATS at %s does not answer JetStream requests: is JetStream enabled?", a.natsURL))
			}
			return nil, natsErr(a.natsURL, err)
		}
	}
	return c, nil
}

// printJSON writes v as indented JSON.
func (a *app) printJSON(v any) error {
	enc := jsonEncoder(a.stdout)
	return enc.Encode(v)
}
