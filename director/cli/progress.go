package cli

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// progress reports how much of an upload has been read: a bar redrawn in
// place on a terminal, a plain line every quarter otherwise.
type progress struct {
	r        io.Reader
	total    int64
	name     string
	w        io.Writer
	tty      bool
	mu       sync.Mutex
	read     int64
	quarter  int64
	lastDraw time.Time
	finished bool
}

func newProgress(r io.Reader, total int64, name string, w io.Writer, tty bool) *progress {
	return &progress{r: r, total: total, name: name, w: w, tty: tty}
}

func (p *progress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.mu.Lock()
	p.read += int64(n)
	p.report(false)
	p.mu.Unlock()
	return n, err
}

func (p *progress) percent() int64 {
	if p.total <= 0 {
		return 100
	}
	return p.read * 100 / p.total
}

func (p *progress) report(final bool) {
	if p.tty {
		if !final && time.Since(p.lastDraw) < 100*time.Millisecond {
			return
		}
		p.lastDraw = time.Now()
		const width = 30
		filled := int(p.percent() * width / 100)
		bar := make([]byte, width)
		for i := range bar {
			bar[i] = ' '
			if i < filled {
				bar[i] = '#'
			}
		}
		fmt.Fprintf(p.w, "\rUploading %s [%s] %3d%% %s/%s", p.name, bar, p.percent(), size(p.read), size(p.total))
		if final {
			fmt.Fprintln(p.w)
		}
		return
	}
	q := p.percent() / 25
	if q > p.quarter || final && !p.finished {
		p.quarter = q
		fmt.Fprintf(p.w, "Uploading %s: %d%% (%s of %s)\n", p.name, p.percent(), size(p.read), size(p.total))
	}
}

// done prints the last report.
func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.finished {
		return
	}
	if p.tty || p.quarter < 4 {
		p.report(true)
	}
	p.finished = true
}

func size(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
