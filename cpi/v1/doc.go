// Package cpiv1 is the generated gRPC code of version 1 of the CPI wire
// protocol (cpi.proto beside it; regenerate with `make proto`). Plugin authors
// do not use it directly: the cpi package serves it and cpi/host calls it.
package cpiv1
