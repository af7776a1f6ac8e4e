package metrics_test

import (
	"net"
	"sync"
	"testing"
)

// hangProxy is a TCP proxy between NATS clients and a server that can hang: while hung it
// forwards nothing in either direction, and keeps every socket open, so the client sees a
// connection that stays up but never answers (a stopped or wedged server, a black-holed
// network path), not a closed one. The bytes that arrive meanwhile wait; resume forwards
// them.
type hangProxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	hung   bool
	wake   *sync.Cond
	conns  []net.Conn
	closed bool
	wg     sync.WaitGroup
}

// startHangProxy listens on a free loopback port and forwards to target until the test ends.
func startHangProxy(t *testing.T, target string) *hangProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &hangProxy{ln: ln, target: target}
	p.wake = sync.NewCond(&p.mu)
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

// url is the proxy's nats:// URL.
func (p *hangProxy) url() string { return "nats://" + p.ln.Addr().String() }

// hang stops forwarding.
func (p *hangProxy) hang() { p.set(true) }

// resume forwards again, the bytes held first.
func (p *hangProxy) resume() { p.set(false) }

func (p *hangProxy) set(hung bool) {
	p.mu.Lock()
	p.hung = hung
	p.mu.Unlock()
	p.wake.Broadcast()
}

func (p *hangProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		if !p.track(c, s) {
			return
		}
		p.wg.Go(func() { p.pipe(s, c) })
		p.wg.Go(func() { p.pipe(c, s) })
	}
}

// track remembers the sockets of one connection, or closes them when the proxy is closed.
func (p *hangProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	p.conns = append(p.conns, cs...)
	return true
}

// pipe copies src to dst, holding each chunk while the proxy hangs. When either side ends,
// both are closed: the proxy passes a close on, it never makes one up.
func (p *hangProxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for p.hung && !p.closed {
				p.wake.Wait()
			}
			closed := p.closed
			p.mu.Unlock()
			if closed {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// close stops the proxy and closes every socket.
func (p *hangProxy) close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.mu.Unlock()
	p.wake.Broadcast()
	p.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	p.wg.Wait()
}
