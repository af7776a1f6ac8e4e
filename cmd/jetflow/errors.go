package main

import (
	"context"
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
	return failedErr(errors.New("cannot connect to NATS at " + url + ": " + err.Error()))
}
