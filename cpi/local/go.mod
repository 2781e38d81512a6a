module github.com/compleat/compleat/cpi/local

go 1.26

require github.com/compleat/compleat/cpi v0.0.0

replace github.com/compleat/compleat/cpi => ../
