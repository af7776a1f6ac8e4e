package breaker

// LocalBreakers is how many per-key breakers the Set holds in memory (tests only).
func (s *Set) LocalBreakers() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.local)
}
