module github.com/compleat/compleat/sim

go 1.26.0
