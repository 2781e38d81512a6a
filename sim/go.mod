module github.com/compleat/compleat/sim

go 1.26.0

require (
	github.com/compleat/compleat/cpi v0.0.0
	golang.org/x/sys v0.48.0
)

replace github.com/compleat/compleat/cpi => ../cpi
