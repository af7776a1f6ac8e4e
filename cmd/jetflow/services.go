package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/micro"
	"github.com/spf13/cobra"

	"github.com/jetflow-dev/jetflow/nodes"
	"github.com/jetflow-dev/jetflow/workflow"
)

// discoverWait is how long `services ls` and `workflows apply` listen for services' replies.
const discoverWait = 500 * time.Millisecond

// serviceView is one service (name and version) of `services ls --json`.
type serviceView struct {
	Name      string            `json:"name"`
	Version   string            `json:"version"`
	Instances int               `json:"instances"`
	Endpoints []serviceEndpoint `json:"endpoints"`
	Requests  int               `json:"requests"`
	Errors    int               `json:"errors"`
	IDs       []string          `json:"ids"`
	Metadata  map[string]string `json:"metadata,omitempty"`
}

type serviceEndpoint struct {
	Name     string `json:"name"`
	Subject  string `json:"subject"`
	Requests int    `json:"requests"`
	Errors   int    `json:"errors"`
}

func (a *app) servicesCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "services", Short: "NATS services the cluster sees (handlers of service nodes, in any language)", Args: cobra.NoArgs, RunE: groupHelp}
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List the NATS services answering the services protocol: name, version, instances, endpoints, requests and errors",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.connect(cmd.Context(), "services ls", false, false)
			if err != nil {
				return err
			}
			defer c.Close()
			stats, err := nodes.DiscoverServices(cmd.Context(), c.nc, discoverWait)
			if err != nil {
				return failedErr(err)
			}
			views := groupServices(stats)
			if a.jsonOut {
				return a.printJSON(views)
			}
			tw := table(a.stdout)
			fmt.Fprintln(tw, "NAME\tVERSION\tINSTANCES\tENDPOINTS\tREQUESTS\tERRORS")
			for _, v := range views {
				var eps []string
				for _, e := range v.Endpoints {
					eps = append(eps, e.Subject)
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%d\n", v.Name, v.Version, v.Instances, strings.Join(eps, ","), v.Requests, v.Errors)
			}
			return tw.Flush()
		},
	}
	ls.Flags().BoolVar(&a.jsonOut, "json", false, "print JSON")
	cmd.AddCommand(ls)
	return cmd
}

// groupServices sums the instances of each service name and version.
func groupServices(stats []micro.Stats) []serviceView {
	by := map[string]*serviceView{}
	for _, st := range stats {
		key := st.Name + "\x00" + st.Version
		v := by[key]
		if v == nil {
			v = &serviceView{Name: st.Name, Version: st.Version, Metadata: st.Metadata}
			by[key] = v
		}
		v.Instances++
		v.IDs = append(v.IDs, st.ID)
		for _, ep := range st.Endpoints {
			v.Requests += ep.NumRequests
			v.Errors += ep.NumErrors
			i := slices.IndexFunc(v.Endpoints, func(e serviceEndpoint) bool { return e.Subject == ep.Subject })
			if i < 0 {
				v.Endpoints = append(v.Endpoints, serviceEndpoint{Name: ep.Name, Subject: ep.Subject})
				i = len(v.Endpoints) - 1
			}
			v.Endpoints[i].Requests += ep.NumRequests
			v.Endpoints[i].Errors += ep.NumErrors
		}
	}
	out := make([]serviceView, 0, len(by))
	for _, v := range by {
		slices.Sort(v.IDs)
		slices.SortFunc(v.Endpoints, func(a, b serviceEndpoint) int { return cmp.Compare(a.Subject, b.Subject) })
		out = append(out, *v)
	}
	slices.SortFunc(out, func(a, b serviceView) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Version, b.Version))
	})
	return out
}

// warnNoResponder says, on stderr, which service nodes of w name a subject no NATS service
// lists (through the services protocol); subjects with expressions are not checked.
func (a *app) warnNoResponder(ctx context.Context, c *conn, w *workflow.Workflow) {
	var subjects []string
	for _, n := range w.Nodes {
		if s, _ := n.With["subject"].(string); n.Type == workflow.ServiceType && s != "" && !strings.Contains(s, "${{") {
			subjects = append(subjects, s)
		}
	}
	if len(subjects) == 0 {
		return
	}
	stats, err := nodes.DiscoverServices(ctx, c.nc, discoverWait)
	if err != nil {
		return
	}
	for _, s := range subjects {
		if !nodes.Serves(stats, s) {
			fmt.Fprintf(a.stderr, "warning: workflow %s: no NATS service answers on %s yet (see `jetflow services ls`); its steps retry until one does\n", w.Name, s)
		}
	}
}
