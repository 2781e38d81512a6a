package app_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/compleat/compleat/director/app"
)

// scriptCommands are the programs the scripts under testdata/script run:
//
//	director ARGS...           the director's command line
//	exits N PROGRAM ARGS...    runs PROGRAM, passing its output through,
//	                           and succeeds only if it exits with status N
var scriptCommands = map[string]func(){
	"director": func() {
		os.Exit(app.ExitCode(app.Run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)))
	},
	"exits": func() { os.Exit(exits()) },
}

// exits is the exits program: see scriptCommands.
func exits() int {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: exits N PROGRAM [ARGS...]")
		return 2
	}
	want, err := strconv.Atoi(os.Args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "exits: %q is not a status\n", os.Args[1])
		return 2
	}
	cmd := exec.Command(os.Args[2], os.Args[3:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	got := 0
	var ee *exec.ExitError
	if err := cmd.Run(); errors.As(err, &ee) {
		got = ee.ExitCode()
	} else if err != nil {
		fmt.Fprintf(os.Stderr, "exits: %v\n", err)
		return 2
	}
	if got != want {
		fmt.Fprintf(os.Stderr, "exits: %s exited %d, want %d\n", os.Args[2], got, want)
		return 1
	}
	return 0
}

// TestScripts runs the command line's behaviour written as scripts
// (testdata/script/*.txtar): what an operator types, what it prints, how it
// exits.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{Dir: "testdata/script"})
}
