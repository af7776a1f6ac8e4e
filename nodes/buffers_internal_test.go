package nodes

import (
	"bytes"
	"io"
	"slices"
	"strings"
	"testing"
)

// pattern returns n bytes that differ from position to position, so a wrong slice shows.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%26 + (i/26)%7)
	}
	return b
}

// writeChunks writes p to w in chunks of size n.
func writeChunks(t *testing.T, w io.Writer, p []byte, n int) {
	t.Helper()
	for len(p) > 0 {
		c := min(n, len(p))
		got, err := w.Write(p[:c])
		if err != nil || got != c {
			t.Fatalf("Write(%d bytes) = %d, %v; want %d, nil", c, got, err, c)
		}
		p = p[c:]
	}
}

func TestLimitedBuffer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		max   int
		total int
		chunk int
		over  bool
		kept  int
	}{
		{"empty", 10, 0, 1, false, 0},
		{"under", 10, 9, 4, false, 9},
		{"exactly max in pieces", 10, 10, 5, false, 10},
		{"exactly max at once", 10, 10, 10, false, 10},
		{"one over at once", 10, 11, 11, true, 10},
		{"one over in pieces", 10, 11, 5, true, 10},
		{"far over", 10, 1000, 7, true, 10},
		{"zero max", 0, 1, 1, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := pattern(tt.total)
			b := &limitedBuffer{max: tt.max}
			writeChunks(t, b, in, tt.chunk)
			if b.over != tt.over {
				t.Errorf("over = %v, want %v", b.over, tt.over)
			}
			if !bytes.Equal(b.Bytes(), in[:tt.kept]) {
				t.Errorf("kept %q, want the first %d bytes %q", b.Bytes(), tt.kept, in[:tt.kept])
			}
		})
	}
}

// os/exec drains a pipe into the writer with io.Copy, which prefers ReadFrom when the
// writer has one: the limit must hold on that path too.
func TestLimitedBufferThroughIOCopy(t *testing.T) {
	t.Parallel()
	in := pattern(100_000)
	b := &limitedBuffer{max: 1000}
	// A bare reader, like the pipe os/exec hands to io.Copy: no WriteTo to take over.
	src := struct{ io.Reader }{bytes.NewReader(in)}
	n, err := io.Copy(b, src)
	if err != nil || n != int64(len(in)) {
		t.Fatalf("io.Copy = %d, %v; want %d, nil (the writer must keep draining)", n, err, len(in))
	}
	if !b.over {
		t.Error("over = false after 100,000 bytes into a 1,000-byte buffer")
	}
	if got := len(b.Bytes()); got != 1000 {
		t.Errorf("kept %d bytes, want 1000", got)
	}
	if !bytes.Equal(b.Bytes(), in[:1000]) {
		t.Error("kept bytes are not the first 1000")
	}
}

func TestTailBuffer(t *testing.T) {
	t.Parallel()
	for _, total := range []int{0, 1, stderrTail - 1, stderrTail, stderrTail + 1, 2 * stderrTail, 2*stderrTail + 1, 10_000} {
		for _, chunk := range []int{1, 7, 100, stderrTail, stderrTail + 1, 2*stderrTail + 1, 20_000} {
			in := pattern(total)
			var b tailBuffer
			writeChunks(t, &b, in, chunk)
			want := string(in[max(0, total-stderrTail):])
			if got := b.String(); got != want {
				t.Errorf("total %d in chunks of %d: String() is %d bytes, want the last %d", total, chunk, len(got), len(want))
			}
			if len(b.b) > 2*stderrTail {
				t.Errorf("total %d in chunks of %d: holds %d bytes, want at most %d", total, chunk, len(b.b), 2*stderrTail)
			}
		}
	}
}

func TestTailBufferKeepsLastLines(t *testing.T) {
	t.Parallel()
	var b tailBuffer
	var all strings.Builder
	for i := range 1000 {
		line := strings.Repeat("x", i%50) + "\n"
		all.WriteString(line)
		if _, err := b.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	s := all.String()
	if got, want := b.String(), s[len(s)-stderrTail:]; got != want {
		t.Errorf("String() is not the last %d bytes written", stderrTail)
	}
}

func TestPermanentCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   any
		want []int
	}{
		{"nil", nil, nil},
		{"empty", []any{}, nil},
		{"every number type", []any{1, int64(2), uint64(3), float64(4)}, []int{1, 2, 3, 4}},
		{"non-numbers skipped", []any{"5", nil, true, uint64(6)}, []int{6}},
		{"not a list", uint64(3), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := permanentCodes(tt.in); !slices.Equal(got, tt.want) {
				t.Errorf("permanentCodes(%#v) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestPreview(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("y", 100)
	if got := preview([]byte(long)); got != long[:40] {
		t.Errorf("preview(100 bytes) = %q, want the first 40", got)
	}
	if got := preview([]byte("short")); got != "short" {
		t.Errorf("preview(short) = %q, want it whole", got)
	}
}
