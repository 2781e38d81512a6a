module compleat.example/webapp

go 1.24
