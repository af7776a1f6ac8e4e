package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// Exit codes of the CLI contract.
const (
	exitOK      = 0
	exitFailed  = 1
	exitUsage   = 2
	exitTimeout = 124
)

// exitError carries an exit code with an error.
type exitError struct {
	code   int
	err    error
	silent bool // already reported on stdout/stderr
}

func (e *exitError) Error() string {
	if e.err == nil {
		return ""
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

func usageErr(err error) error  { return &exitError{code: exitUsage, err: err} }
func failedErr(err error) error { return &exitError{code: exitFailed, err: err} }

func isSilent(err error) bool {
	var ee *exitError
	return errors.As(err, &ee) && ee.silent
}

func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	var ve *workflow.ValidationError
	switch {
	case errors.As(err, &ve),
		errors.Is(err, producer.ErrUnknownWorkflow),
		errors.Is(err, producer.ErrBadInput):
		return exitUsage
	case errors.Is(err, context.DeadlineExceeded):
		return exitTimeout
	}
	return exitFailed
}

// oneLine keeps an error message on one line.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// natsErr explains a connection error.
func natsErr(url string, err error) error {
	switch {
	case errors.Is(err, nats.ErrNoServers):
		return failedErr(errors.New("cannot reach NATS at " + url + ": start `jetflow dev`, or point --nats (or NATS_URL) at your server"))
	case errors.Is(err, nats.ErrAuthorization), strings.Contains(err.Error(), "Authorization"):
		return failedErr(errors.New("NATS at " + url + " refused the credentials: check --creds, --user/--password, --token or --nkey"))
	case errors.Is(err, checkpoint.ErrNotSetUp):
		return failedErr(err)
	}
	var unknownCA x509.UnknownAuthorityError
	var badCert *tls.CertificateVerificationError
	switch {
	case errors.As(err, &unknownCA), errors.As(err, &badCert):
		return failedErr(errors.New("NATS at " + url + " presented a TLS certificate this machine does not trust (" + err.Error() + "): pass its CA with --tls-ca (or NATS_CA)"))
	case strings.Contains(err.Error(), "closed by remote after TLS handshake"), strings.Contains(err.Error(), "remote error: tls:"):
		return failedErr(errors.New("NATS at " + url + " closed the connection after the TLS handshake: it wants a client certificate signed by its CA: pass --tls-cert and --tls-key (or NATS_CERT and NATS_KEY)"))
	}
	return failedErr(errors.New("cannot connect to NATS at " + url + ": " + err.Error()))
}
