package compile

// NaiveOrder turns off critical-path ordering, for comparison in tests and
// benchmarks.
func NaiveOrder(o Options) Options {
	o.naive = true
	return o
}
