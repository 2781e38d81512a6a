// Package releases holds the sample releases as source directories and the
// tests that prove they work: releases/web (a web server behind a load
// balancer, drained without losing requests) and releases/dag (a synthetic
// dependency graph for the compiler benchmark).
//
// The Go programs of releases/web live in their own modules
// (releases/web/src/webapp, releases/web/src/lb), outside the repository's
// root module: they are built only by their packaging scripts, as a compile
// VM builds them, and the tests here run those scripts for real.
package releases
