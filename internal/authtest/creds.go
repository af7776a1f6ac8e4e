package authtest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// writeFile writes a secret file (mode 0600) into dir and returns its path.
func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// NkeyUser makes a user nkey, writes its seed to a file in dir and returns the public key
// (for server.NkeyUser) and the seed file's path (for --nkey).
func NkeyUser(t testing.TB, dir, name string) (pub, seedFile string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, err = kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	return pub, writeFile(t, dir, name+".nk", append(seed, '\n'))
}

// Operator is a decentralized-auth trust chain, as nsc makes one: an operator, a system
// account, and an account with JetStream (unlimited) whose users connect with .creds files.
// Configure puts a server in operator mode with an in-memory resolver preloaded with both
// accounts.
type Operator struct {
	claims     *jwt.OperatorClaims
	sysPub     string
	accountPub string
	accountKP  nkeys.KeyPair
	resolver   *server.MemAccResolver
}

// NewOperator makes the operator, the system account and the JetStream account.
func NewOperator(t testing.TB) *Operator {
	t.Helper()
	opKP := mustKP(t, nkeys.CreateOperator)
	opPub := mustPub(t, opKP)
	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "jetflow-test"
	opJWT, err := oc.Encode(opKP)
	if err != nil {
		t.Fatal(err)
	}
	claims, err := jwt.DecodeOperatorClaims(opJWT)
	if err != nil {
		t.Fatal(err)
	}
	o := &Operator{claims: claims, resolver: &server.MemAccResolver{}}

	account := func(name string, js bool) (string, nkeys.KeyPair) {
		kp := mustKP(t, nkeys.CreateAccount)
		pub := mustPub(t, kp)
		ac := jwt.NewAccountClaims(pub)
		ac.Name = name
		if js {
			ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		}
		token, err := ac.Encode(opKP)
		if err != nil {
			t.Fatal(err)
		}
		if err := o.resolver.Store(pub, token); err != nil {
			t.Fatal(err)
		}
		return pub, kp
	}
	o.sysPub, _ = account("SYS", false)
	o.accountPub, o.accountKP = account("JETFLOW", true)
	return o
}

// Configure puts opts in operator mode trusting this operator.
func (o *Operator) Configure(opts *server.Options) {
	opts.TrustedOperators = []*jwt.OperatorClaims{o.claims}
	opts.SystemAccount = o.sysPub
	opts.AccountResolver = o.resolver
}

// Creds makes a user of the JetStream account, signed by the account key, and writes its
// .creds file (JWT and seed) into dir. perms nil means no restriction.
func (o *Operator) Creds(t testing.TB, dir, name string, perms *jwt.Permissions) string {
	t.Helper()
	return userCreds(t, dir, name, o.accountKP, perms)
}

// ForeignCreds writes a .creds file of a well-formed user signed by an account this
// operator never issued: the server must refuse it.
func (o *Operator) ForeignCreds(t testing.TB, dir, name string) string {
	t.Helper()
	return userCreds(t, dir, name, mustKP(t, nkeys.CreateAccount), nil)
}

func userCreds(t testing.TB, dir, name string, accountKP nkeys.KeyPair, perms *jwt.Permissions) string {
	t.Helper()
	ukp := mustKP(t, nkeys.CreateUser)
	uc := jwt.NewUserClaims(mustPub(t, ukp))
	uc.Name = name
	if perms != nil {
		uc.Permissions = *perms
	}
	token, err := uc.Encode(accountKP)
	if err != nil {
		t.Fatal(err)
	}
	seed, err := ukp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(token, seed)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, dir, name+".creds", creds)
}

func mustKP(t testing.TB, create func() (nkeys.KeyPair, error)) nkeys.KeyPair {
	t.Helper()
	kp, err := create()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func mustPub(t testing.TB, kp nkeys.KeyPair) string {
	t.Helper()
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}
