// Package workflow owns what a workflow is and how it travels: definitions (built in Go or
// parsed from YAML/JSON), their validation and hashing, the step envelope (the wire format of
// a step message), and the names of every subject, stream, bucket and key on the broker.
//
// It is pure: nothing here talks to NATS, so every other package can depend on it.
package workflow
