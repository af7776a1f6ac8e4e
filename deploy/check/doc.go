// Package check validates the deployment files in deploy/ with the tools of their own
// ecosystems, beside the consistency tests of the main module:
//
//   - deploy/compose.yaml loads with the Compose specification's Go library (schema
//     validation, interpolation, consistency checks);
//   - deploy/k8s is built with kustomize's own engine (krusty), and every manifest, in the
//     files and in the build, decodes strictly (unknown or duplicate fields fail) into the
//     Kubernetes API type its apiVersion and kind name, with KEDA's types for the
//     ScaledObjects and KEDA's own trigger-metadata parser for their nats-jetstream triggers;
//   - deploy/grafana/jetflow.json decodes strictly into the Grafana Foundation SDK's
//     dashboard type, and the provisioning files point at it;
//   - deploy/nats/nats.conf (with accounts.conf) and the accounts.conf embedded in
//     deploy/k8s/nats-values.yaml are parsed by nats-server's config parser, and a server
//     starts with each;
//   - deploy/prometheus/prometheus.yml scrapes services that compose defines.
//
// It is a module of its own so that these tools do not become dependencies of jetflow, and
// it does not import jetflow: it only reads the files under ../ (deploy/). The package has
// no code outside its tests; run them with
//
//	cd deploy/check && go test ./...
package check
