// Command director is the Compleat director: the server and its command line.
package main

import (
	"context"
	"os"

	"github.com/compleat/compleat/director/app"
)

func main() {
	os.Exit(app.ExitCode(app.Run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)))
}
