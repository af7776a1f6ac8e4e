// Package dlq owns the dead-letter stream: moving a step that cannot finish into it, with the
// reason and last error in headers; listing, grouping and inspecting what it holds (List,
// Group, Show); replaying entries by DESIGN.md's protocol (Replay, ReplayBatch), and deleting
// them (Delete, Purge). A DLQ entry keeps the original step body, so it can be inspected and
// replayed; an entry's ID is its sequence in the DLQ stream.
package dlq
