// Command shout is a jetflow handler written as a NATS service (nats.go micro): it answers
// the service node of examples/shout.yaml on svc.shout with the run input's text in capitals.
// Any language with a NATS client can do the same; see examples/services/ts for TypeScript.
//
//	go run ./cmd/jetflow dev                 # terminal 1
//	go run ./examples/services/go            # terminal 2 (NATS_URL, default nats://127.0.0.1:4222)
//	go run ./cmd/jetflow start shout --input '{"text": "hello"}' --wait
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "shout:", err)
		os.Exit(1)
	}
}

func run() error {
	url := os.Getenv("NATS_URL")
	if url == "" {
		url = nats.DefaultURL
	}
	nc, err := nats.Connect(url)
	if err != nil {
		return err
	}
	defer nc.Close()
	svc, err := Start(nc)
	if err != nil {
		return err
	}
	defer func() { _ = svc.Stop() }()
	fmt.Println("shout: answering on svc.shout; Ctrl-C to stop")
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	<-stop
	return nil
}

// Start adds the shout service to nc.
func Start(nc *nats.Conn) (micro.Service, error) {
	svc, err := micro.AddService(nc, micro.Config{Name: "shout", Version: "1.0.0", Description: "capitals for jetflow's shout workflow"})
	if err != nil {
		return nil, err
	}
	err = svc.AddGroup("svc").AddEndpoint("shout", micro.HandlerFunc(handle))
	return svc, err
}

// handle answers one step: the body is the node input, {"input": …, "nodes": {…}}; jetflow's
// headers say which run, node and attempt it is (Idempotency-Key makes side effects once).
func handle(r micro.Request) {
	var in struct {
		Input struct {
			Text string `json:"text"`
		} `json:"input"`
	}
	if err := json.Unmarshal(r.Data(), &in); err != nil || in.Input.Text == "" {
		// 4xx: permanent, the step goes to the DLQ with this message.
		_ = r.Error("400", "input.text is missing", nil)
		return
	}
	_ = r.RespondJSON(map[string]string{
		"shout": strings.ToUpper(in.Input.Text),
		"run":   r.Headers().Get("Jetflow-Run"),
	})
}
