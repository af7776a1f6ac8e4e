// Package dlq owns the dead-letter stream: moving a step that cannot finish into it, with the
// reason and last error in headers, and listing what it holds. A DLQ entry keeps the original
// step body, so it can be inspected and replayed.
package dlq
