package metrics

import (
	"cmp"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/workflow"
)

// Defaults of ServerConfig.
const (
	DefaultAddr          = "127.0.0.1:8080"
	DefaultEventInterval = 3 * time.Second
	DefaultReadyTimeout  = 2 * time.Second
	DefaultReadyCache    = time.Second
)

// ErrPublicWithoutToken means the server was asked to listen on every interface without an
// admin token and without ServerConfig.AllowAllInterfaces.
var ErrPublicWithoutToken = errors.New("refusing to serve on every interface without an admin token")

// ServerConfig tunes a Server. Zero fields take the defaults.
type ServerConfig struct {
	// Addr is where to listen (default 127.0.0.1:8080). A host of 0.0.0.0, :: or none means
	// every interface, which needs AdminToken or AllowAllInterfaces.
	Addr string
	// PortSearch is how many following ports to try when Addr's port is taken (default 0:
	// fail). `jetflow dev` takes the next free port this way.
	PortSearch int
	// AdminToken is the bearer token that state-changing requests (replay, cancel, purge)
	// must send. Empty: the server is read-only and refuses every mutation with 403.
	AdminToken string
	// AllowAllInterfaces lets the server listen on every interface without AdminToken (the
	// data is then readable by anyone who can reach it); a warning is logged.
	AllowAllInterfaces bool
	// ShowPayloads shows inputs, outputs and whole error texts. Default: outputs and inputs
	// are hidden and errors cut to their first line (at most 200 characters).
	ShowPayloads bool
	// Names of the installation (default prefix "jetflow").
	Names workflow.Names
	// Gatherer serves /metrics (default: none; /metrics answers 404).
	Gatherer prometheus.Gatherer
	// Health, when set, is shown on the dashboard and at /api/health.
	Health *Health
	// Draining, when set, reports that the process is shutting down: /readyz then answers
	// 503 so load balancers stop sending work.
	Draining func() bool
	// Version is shown in the dashboard's footer.
	Version string
	// EventInterval is how often /events sends an update (default 3 s).
	EventInterval time.Duration
	// ReadyTimeout bounds /readyz's NATS round trip (default 2 s).
	ReadyTimeout time.Duration
	// ReadyCache is how long a /readyz verdict is reused (default 1 s).
	ReadyCache time.Duration
	// Logger receives the server's notices (default: discard).
	Logger *slog.Logger
}

// WithDefaults returns c with zero fields filled in.
func (c ServerConfig) WithDefaults() ServerConfig {
	c.Addr = cmp.Or(c.Addr, DefaultAddr)
	if c.Names.Prefix() == "" {
		c.Names = workflow.MustNames("")
	}
	c.Version = cmp.Or(c.Version, "dev")
	c.EventInterval = cmp.Or(c.EventInterval, DefaultEventInterval)
	c.ReadyTimeout = cmp.Or(c.ReadyTimeout, DefaultReadyTimeout)
	c.ReadyCache = cmp.Or(c.ReadyCache, DefaultReadyCache)
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c
}

func (c ServerConfig) validate() error {
	host, port, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return fmt.Errorf("metrics: Addr %q: use host:port, e.g. 127.0.0.1:8080", c.Addr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("metrics: Addr %q: the port must be a number", c.Addr)
	}
	if allInterfaces(host) && c.AdminToken == "" && !c.AllowAllInterfaces {
		return fmt.Errorf("%w: listen on %s: give an admin token, or listen on 127.0.0.1", ErrPublicWithoutToken, c.Addr)
	}
	switch {
	case c.PortSearch < 0:
		return errors.New("metrics: PortSearch must be positive")
	case c.EventInterval < 0 || c.ReadyTimeout < 0 || c.ReadyCache < 0:
		return errors.New("metrics: EventInterval, ReadyTimeout and ReadyCache must be positive")
	}
	return nil
}

// allInterfaces reports whether a listen host means every interface.
func allInterfaces(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// Server serves /metrics, the probes, the JSON API, Server-Sent Events and the dashboard.
type Server struct {
	js    jetstream.JetStream
	store *checkpoint.Store
	cfg   ServerConfig
	log   *slog.Logger
	csrf  *http.CrossOriginProtection
	act   *Activity
	pages map[string]*pageTemplate
	mux   *http.ServeMux

	mu sync.Mutex
	ln net.Listener

	readyMu  sync.Mutex
	readyAt  time.Time
	readyErr error

	spendMu sync.Mutex
	spend   *checkpoint.SpendTotal // today's spend, last read at spendAt
	spendAt time.Time
}

// NewServer returns a server reading through js and store. It refuses (ErrPublicWithoutToken)
// to serve every interface without an admin token unless cfg allows it.
func NewServer(js jetstream.JetStream, store *checkpoint.Store, cfg ServerConfig) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	s := &Server{js: js, store: store, cfg: cfg, log: cfg.Logger, csrf: http.NewCrossOriginProtection(), pages: pages,
		act: NewActivity(js, cfg.Names, ActivityConfig{Logger: cfg.Logger})}
	s.mux = s.routes()
	return s, nil
}

// Activity returns the server's activity tracker (it reads only while someone looks).
func (s *Server) Activity() *Activity { return s.act }

// Handler returns the server's handler, for mounting it elsewhere or in tests.
func (s *Server) Handler() http.Handler { return s.mux }

func (s *Server) routes() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("GET /healthz", s.healthz)
	m.HandleFunc("GET /readyz", s.readyz)
	if s.cfg.Gatherer != nil {
		m.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Gatherer, promhttp.HandlerOpts{Timeout: 10 * time.Second}))
	}
	m.HandleFunc("GET /api/overview", s.apiOverview)
	m.HandleFunc("GET /api/runs", s.apiRuns)
	m.HandleFunc("GET /api/runs/{id}", s.apiRun)
	m.HandleFunc("POST /api/runs/{id}/cancel", s.mutation(s.apiCancel))
	m.HandleFunc("POST /api/runs/{id}/signal/{name}", s.mutation(s.apiSignal))
	m.HandleFunc("GET /api/dlq", s.apiDLQ)
	m.HandleFunc("GET /api/dlq/{id}", s.apiDLQEntry)
	m.HandleFunc("POST /api/dlq/replay", s.mutation(s.apiReplay))
	m.HandleFunc("POST /api/dlq/purge", s.mutation(s.apiPurge))
	m.HandleFunc("GET /api/breakers", s.apiBreakers)
	m.HandleFunc("GET /api/workers", s.apiWorkers)
	m.HandleFunc("GET /api/health", s.apiHealth)
	m.HandleFunc("GET /events", s.events)
	m.Handle("GET /static/", http.FileServerFS(staticFS()))
	m.HandleFunc("GET /{$}", s.pageOverview)
	m.HandleFunc("GET /runs", s.pageRuns)
	m.HandleFunc("GET /runs/{id}", s.pageRun)
	m.HandleFunc("GET /dlq", s.pageDLQ)
	m.HandleFunc("GET /breakers", s.pageBreakers)
	return m
}

// Listen binds the listening socket (trying PortSearch following ports when the port is
// taken) and returns the dashboard's URL. Run calls it when it was not called before.
func (s *Server) Listen() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return s.url(), nil
	}
	host, portText, _ := net.SplitHostPort(s.cfg.Addr)
	port, _ := strconv.Atoi(portText)
	var err error
	for i := 0; i <= s.cfg.PortSearch; i++ {
		addr := net.JoinHostPort(host, strconv.Itoa(port+i))
		if port == 0 {
			addr = s.cfg.Addr
		}
		if s.ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
	}
	if err != nil {
		return "", fmt.Errorf("listen on %s: %w", s.cfg.Addr, err)
	}
	if allInterfaces(host) {
		if s.cfg.AdminToken == "" {
			s.log.Warn("the dashboard listens on every interface WITHOUT an admin token: anyone who reaches it reads every run", "addr", s.ln.Addr().String())
		} else {
			s.log.Warn("the dashboard listens on every interface: protect it (TLS proxy, firewall); mutations need the admin token", "addr", s.ln.Addr().String())
		}
	}
	return s.url(), nil
}

// URL returns the dashboard's URL once Listen succeeded ("" before).
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.url()
}

func (s *Server) url() string {
	if s.ln == nil {
		return ""
	}
	a := s.ln.Addr().(*net.TCPAddr)
	host := a.IP.String()
	if a.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(a.Port)) + "/"
}

// Run serves until ctx ends, then closes every connection (Server-Sent Events streams
// included) within 5 s.
func (s *Server) Run(ctx context.Context) error {
	if _, err := s.Listen(); err != nil {
		return err
	}
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()
	base, cancelBase := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBase()
	hs := &http.Server{
		Handler:           s.secure(s.mux),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return base },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	var wg sync.WaitGroup
	actCtx, stopAct := context.WithCancel(ctx)
	wg.Go(func() { _ = s.act.Run(actCtx) })
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	s.log.Info("dashboard listening", "url", s.URL())
	var err error
	select {
	case err = <-served:
	case <-ctx.Done():
		cancelBase() // ends the event streams, which never go idle
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if e := hs.Shutdown(sctx); e != nil {
			_ = hs.Close()
		}
		cancel()
		err = <-served
	}
	stopAct()
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// secure adds headers every response carries: no framing, no sniffing, scripts and styles
// from this server only.
func (s *Server) secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		h.ServeHTTP(w, r)
	})
}

// healthz is liveness: the process serves HTTP. It never asks NATS, so a NATS outage does
// not restart every worker at once.
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = io.WriteString(w, "ok\n")
}

// errDraining is /readyz's answer while the process shuts down.
var errDraining = errors.New("draining: shutting down")

// readyz is readiness: a NATS round trip succeeds and the process is not draining.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := s.ready(r.Context()); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "not ready: "+workflow.OneLine(err.Error(), 300)+"\n")
		return
	}
	_, _ = io.WriteString(w, "ready\n")
}

// ready checks NATS with one JetStream request (AccountInfo), reusing a verdict for
// ReadyCache. A connection that is not connected fails at once; a server that stopped
// answering fails within ReadyTimeout.
func (s *Server) ready(ctx context.Context) error {
	if s.cfg.Draining != nil && s.cfg.Draining() {
		return errDraining
	}
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	if !s.readyAt.IsZero() && time.Since(s.readyAt) < s.cfg.ReadyCache {
		return s.readyErr
	}
	var err error
	if st := s.js.Conn().Status(); st != nats.CONNECTED {
		err = fmt.Errorf("NATS connection is %s", strings.ToLower(st.String()))
	} else {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ReadyTimeout)
		_, err = s.js.AccountInfo(cctx)
		cancel()
		if err != nil {
			err = fmt.Errorf("NATS does not answer: %w", err)
		}
	}
	s.readyAt, s.readyErr = time.Now(), err
	return err
}

// mutation guards a state-changing handler: the server must have an admin token (else 403),
// the request must not come from another origin (403), and it must carry the token as
// "Authorization: Bearer <token>" (else 401). Only POST routes use it.
func (s *Server) mutation(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.AdminToken == "" {
			writeError(w, http.StatusForbidden, "this server is read-only: start it with --admin-token to allow replay, cancel and purge")
			return
		}
		if err := s.csrf.Check(r); err != nil {
			writeError(w, http.StatusForbidden, "cross-origin request refused: use the dashboard served by this server")
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(s.cfg.AdminToken)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="jetflow"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong admin token: send Authorization: Bearer <token>")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
		s.log.Info("admin request", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
		h(w, r)
	}
}

// writeJSON writes v as JSON with status code.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// APIError is the body of every error answer of the API.
type APIError struct {
	// Error says what was wrong, in one line.
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, APIError{Error: msg})
}
