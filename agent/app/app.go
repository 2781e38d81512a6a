// Package app is the agent's composition root: it parses the command line,
// reads the settings from the infrastructure, builds every part (installer,
// supervisor, lifecycle runner, disks, compiler, actions) and serves the
// message bus until the context ends. Nothing else wires parts together.
package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/compleat/compleat/agent/action"
	"github.com/compleat/compleat/agent/blob"
	"github.com/compleat/compleat/agent/bus"
	"github.com/compleat/compleat/agent/compile"
	"github.com/compleat/compleat/agent/disk"
	"github.com/compleat/compleat/agent/install"
	"github.com/compleat/compleat/agent/layout"
	"github.com/compleat/compleat/agent/lifecycle"
	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/agent/settings"
	"github.com/compleat/compleat/agent/supervisor"
	"github.com/compleat/compleat/agent/vitals"
)

// UsageError is a bad command line (exit status 2).
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Options are the parsed command line.
type Options struct {
	Infrastructure string
	SettingsFile   string
	BaseDir        string
	MetadataURL    string
	ConfigDrive    string
	ScriptTimeout  time.Duration
	LogLevel       string
	// JobUser is the user the jobs' processes run as when the agent runs
	// as root (made if missing); "root" keeps them the agent's.
	JobUser string
}

// ParseArgs parses the command line.
func ParseArgs(args []string, stderr io.Writer) (Options, error) {
	var o Options
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.Infrastructure, "infrastructure", "local", "where the settings come from: local, aws, azure or openstack")
	fs.StringVar(&o.SettingsFile, "settings-file", "", "settings file (local)")
	fs.StringVar(&o.BaseDir, "base-dir", "/var/vcap", "root of the VM's tree (jobs, packages, data, sys, store)")
	fs.StringVar(&o.MetadataURL, "metadata-url", settings.DefaultMetadataURL, "metadata service base URL (aws, azure, openstack)")
	fs.StringVar(&o.ConfigDrive, "config-drive", "", "directory where the OpenStack config drive is mounted (default: find it by label and mount it)")
	fs.DurationVar(&o.ScriptTimeout, "script-timeout", 0, "timeout of each lifecycle script run (0: none, as in BOSH)")
	fs.StringVar(&o.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.JobUser, "job-user", "vcap", "user the jobs' processes run as when the agent is root (made if missing; root: the agent's)")
	if err := fs.Parse(args); err != nil {
		return o, &UsageError{err}
	}
	if fs.NArg() > 0 {
		return o, &UsageError{fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))}
	}
	switch o.Infrastructure {
	case "local":
		if o.SettingsFile == "" {
			return o, &UsageError{errors.New("--infrastructure local needs --settings-file")}
		}
	case "aws", "azure", "openstack":
	default:
		return o, &UsageError{fmt.Errorf("--infrastructure %q: want local, aws, azure or openstack", o.Infrastructure)}
	}
	if o.BaseDir == "" {
		return o, &UsageError{errors.New("--base-dir is empty")}
	}
	return o, nil
}

// Source returns the settings source the options select.
func (o Options) Source() settings.Source {
	switch o.Infrastructure {
	case "aws":
		return settings.AWS{BaseURL: o.MetadataURL}
	case "azure":
		return settings.Azure{BaseURL: o.MetadataURL}
	case "openstack":
		return settings.FirstOf{settings.OpenStackConfigDrive{Dir: o.ConfigDrive}, settings.OpenStackMetadata{BaseURL: o.MetadataURL}}
	default:
		return settings.File{Path: o.SettingsFile}
	}
}

// Run runs the agent until ctx ends.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts, err := ParseArgs(args, stderr)
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(opts.LogLevel)); err != nil {
		return &UsageError{fmt.Errorf("--log-level: %w", err)}
	}
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))

	l := layout.Layout{Base: opts.BaseDir}
	if err := l.Ensure(); err != nil {
		return err
	}
	store := settings.Store{Dir: l.Bosh()}
	s, err := store.Load(ctx, opts.Source(), logger)
	if err != nil {
		return err
	}
	logger = logger.With("agent", s.AgentID)
	logger.Info("agent starting", "infrastructure", opts.Infrastructure, "base_dir", l.Base, "mbus", s.Mbus.URL)
	holder := settings.NewHolder(s, store)

	httpClient, err := blob.NewHTTPClient(s.Blobstore.CACert)
	if err != nil {
		return fmt.Errorf("settings blobstore.ca_cert: %w", err)
	}
	blobs := &blob.Store{Client: httpClient, CacheDir: l.Blobs()}
	holder.OnChange(func(s settings.Settings) {
		if c, err := blob.NewHTTPClient(s.Blobstore.CACert); err == nil {
			blobs.SetClient(c)
		} else {
			logger.Error("blobstore ca from update_settings", "err", err)
		}
	})
	installer := &install.Installer{Layout: l, Blobs: blobs, Logger: logger}

	alerts := make(chan protocol.Alert, 256)
	path := supervisor.DefaultPath
	if p := os.Getenv("PATH"); p != "" {
		path += ":" + p
	}
	runAs, err := jobUser(opts.JobUser, logger)
	if err != nil {
		return err
	}
	sup, err := supervisor.New(logger, supervisor.Config{
		LogDir:   l.SysLog(),
		RunDir:   l.SysRun(),
		DataDir:  l.Data(),
		StoreDir: l.Store(),
		RunAs:    runAs,
		BaseEnv:  map[string]string{"PATH": path},
		OnEvent: func(e supervisor.Event) {
			select {
			case alerts <- alertOf(e):
			default:
				logger.Warn("alert dropped: queue full", "job", e.Job, "process", e.Process)
			}
		},
	})
	if err != nil {
		return err
	}
	scripts, err := lifecycle.New(logger, lifecycle.Config{
		JobsDir: l.Jobs(),
		LogDir:  l.SysLog(),
		Timeout: opts.ScriptTimeout,
		Env:     map[string]string{"PATH": path},
	})
	if err != nil {
		return err
	}
	disks := disk.New(l, logger)
	compiler := &compile.Compiler{Layout: l, Blobs: blobs, Packages: installer, Environ: os.Environ(), Logger: logger}
	actions := action.New(action.Deps{
		Layout:    l,
		Processes: sup,
		Scripts:   scripts,
		Installer: installer,
		Disks:     disks,
		Compiler:  compiler,
		Uploader:  blobs,
		Vitals:    &vitals.Sampler{Disks: map[string]string{"system": "/", "ephemeral": l.Data(), "persistent": l.Store()}},
		Settings:  holder,
		Logger:    logger,
	})
	defer func() {
		actions.Close()
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := sup.Close(cctx); err != nil {
			logger.Error("stop processes", "err", err)
		}
		logger.Info("agent stopped")
	}()
	if err := disks.Restore(ctx); err != nil {
		logger.Error("mount persistent disks again", "err", err)
	}
	if err := actions.Resume(ctx); err != nil {
		logger.Error("resume jobs started before the agent restarted", "err", err)
	}
	return bus.Run(ctx, bus.Config{
		Settings: holder.Current,
		Handler:  actions,
		State:    actions,
		Alerts:   alerts,
		Logger:   logger,
	})
}

func alertOf(e supervisor.Event) protocol.Alert {
	var id [8]byte
	rand.Read(id[:])
	sev := 5
	switch e.To {
	case supervisor.StateFailing:
		sev = 2
	case supervisor.StateStopped:
		sev = 4
	}
	summary := fmt.Sprintf("process %s of job %s is %s (was %s)", e.Process, e.Job, e.To, e.From)
	if e.Reason != "" {
		summary += ": " + e.Reason
	}
	return protocol.Alert{
		ID:       hex.EncodeToString(id[:]),
		Severity: sev,
		Title:    fmt.Sprintf("%s/%s %s", e.Job, e.Process, e.To),
		Summary:  summary,
		Job:      e.Job,
		Process:  e.Process,
		State:    string(e.To),
		Time:     e.Time.UTC(),
	}
}
