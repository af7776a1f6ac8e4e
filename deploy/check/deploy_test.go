package check

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// deployDir is deploy/, the parent of this module.
const deployDir = ".."

// deployPath returns the path of a file under deploy/.
func deployPath(elem ...string) string {
	return filepath.Join(append([]string{deployDir}, elem...)...)
}

// readDeploy reads a file under deploy/ or fails the test.
func readDeploy(t *testing.T, elem ...string) []byte {
	t.Helper()
	data, err := os.ReadFile(deployPath(elem...))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// yamlDocuments splits a multi-document YAML stream the way kubectl does, dropping
// documents that hold nothing but comments.
func yamlDocuments(t *testing.T, data []byte) [][]byte {
	t.Helper()
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatal(err)
		}
		asJSON, err := yaml.YAMLToJSON(doc)
		if err != nil {
			t.Fatalf("document %d: %v", len(docs)+1, err)
		}
		if string(bytes.TrimSpace(asJSON)) == "null" {
			continue
		}
		docs = append(docs, doc)
	}
}

// TestYAMLDocumentsSplits keeps yamlDocuments honest: comment-only documents are dropped,
// the others kept in order.
func TestYAMLDocumentsSplits(t *testing.T) {
	docs := yamlDocuments(t, []byte("# only a comment\n---\na: 1\n---\n---\n# c\nb: 2\n"))
	if len(docs) != 2 {
		t.Fatalf("got %d documents, want 2: %q", len(docs), docs)
	}
	if !bytes.Contains(docs[0], []byte("a: 1")) || !bytes.Contains(docs[1], []byte("b: 2")) {
		t.Fatalf("documents out of order or altered: %q", docs)
	}
}
