package authtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// PKI is a throwaway certificate authority with a server certificate for 127.0.0.1 and a
// client certificate, all as PEM files in one directory.
type PKI struct {
	// CA is the CA certificate (for --tls-ca and the server's client verification).
	CA string
	// ServerCert and ServerKey are the server's pair, valid for 127.0.0.1 and localhost.
	ServerCert, ServerKey string
	// ClientCert and ClientKey are a client pair for mutual TLS (--tls-cert, --tls-key).
	ClientCert, ClientKey string
	// StrangerCert and StrangerKey are a client pair signed by another CA: a server that
	// verifies clients against CA must refuse it.
	StrangerCert, StrangerKey string
}

// NewPKI makes the CA and the certificates in dir.
func NewPKI(t testing.TB, dir string) *PKI {
	t.Helper()
	caKey, caCert, caPEM := newCA(t, "jetflow test CA")
	p := &PKI{CA: writeFile(t, dir, "ca.pem", caPEM)}
	p.ServerCert, p.ServerKey = leaf(t, dir, "server", caCert, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:    []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	p.ClientCert, p.ClientKey = leaf(t, dir, "client", caCert, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "jetflow-client"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	otherKey, otherCert, _ := newCA(t, "a CA the server does not trust")
	p.StrangerCert, p.StrangerKey = leaf(t, dir, "stranger", otherCert, otherKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "stranger"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return p
}

// Configure makes opts require TLS with the server certificate; with verifyClients, the
// server also requires a client certificate signed by the CA (mutual TLS).
func (p *PKI) Configure(t testing.TB, opts *server.Options, verifyClients bool) {
	t.Helper()
	tc := &server.TLSConfigOpts{CertFile: p.ServerCert, KeyFile: p.ServerKey}
	if verifyClients {
		tc.CaFile = p.CA
		tc.Verify = true
	}
	cfg, err := server.GenTLSConfig(tc)
	if err != nil {
		t.Fatal(err)
	}
	opts.TLS = true
	opts.TLSConfig = cfg
	opts.TLSVerify = verifyClients
}

// newSerial returns a random 128-bit serial number, as RFC 5280 recommends.
func newSerial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newCA(t testing.TB, name string) (*ecdsa.PrivateKey, *x509.Certificate, []byte) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// leaf signs tmpl with the CA and writes <name>-cert.pem and <name>-key.pem.
func leaf(t testing.TB, dir, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, tmpl *x509.Certificate) (certFile, keyFile string) {
	t.Helper()
	key := newKey(t)
	tmpl.SerialNumber = newSerial(t)
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = writeFile(t, dir, name+"-cert.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	keyFile = writeFile(t, dir, name+"-key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	return certFile, keyFile
}
