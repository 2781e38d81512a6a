module compleat.example/lb

go 1.24
