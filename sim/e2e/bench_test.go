package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// BenchmarkDeployWeb measures the wall time of deploying releases/web (2 web
// instances and an lb) with a production director, on cpi-local and on
// cpi-aws against the simulated AWS, in one run: each iteration deploys
// from nothing (cold: the packages compile on compilation VMs), deletes
// the deployment, deploys again (warm: compiled packages cached) and
// deletes it. Reported: cold_s and warm_s, seconds per deploy until the lb
// answers from both web instances.
func BenchmarkDeployWeb(b *testing.B) {
	requireSim(b)
	bin := binaries(b)

	b.Run("local", func(b *testing.B) {
		work := b.TempDir()
		d := startDirector(b, bin, work, []cpiEntry{{Name: "local", Type: "local", Properties: map[string]any{
			"data_dir": filepath.Join(work, "local"), "dynamic_range": "127.88.0.0/16",
		}}})
		stemcell := filepath.Join(work, "local.tgz")
		d.run(b, "create-stemcell", "--agent", filepath.Join(bin, "agent"), "--tarball", stemcell)
		d.run(b, "-n", "upload-release", "releases/web")
		d.run(b, "-n", "upload-stemcell", stemcell)
		moved := func(file string) string {
			raw, err := os.ReadFile(filepath.Join(repoRoot(), "manifests", "local", file))
			if err != nil {
				b.Fatal(err)
			}
			return strings.ReplaceAll(string(raw), "127.77.", "127.86.")
		}
		d.run(b, "-n", "update-cloud-config", writeFile(b, filepath.Join(work, "cc.yml"), moved("cloud-config.yml")))
		manifest := writeFile(b, filepath.Join(work, "web.yml"), moved("web.yml"))
		benchDeploys(b, d, manifest, "127.86.1.10:8080")
	})

	b.Run("aws", func(b *testing.B) {
		work := b.TempDir()
		sim := startAWS(b, bin, work, "127.87.0.0/16")
		d := startDirector(b, bin, work, []cpiEntry{awsCPI("aws", sim)})
		stemcell := filepath.Join(work, "aws-light.tgz")
		d.run(b, "create-stemcell", "--light", "--name", "compleat-aws", "--format", "aws-light",
			"--cloud-property", "ami_id="+sim.env["COMPLEAT_AWS_AMI"], "--tarball", stemcell)
		d.run(b, "-n", "upload-release", "releases/web")
		d.run(b, "-n", "upload-stemcell", stemcell)
		d.run(b, "-n", "update-cloud-config", writeFile(b, filepath.Join(work, "cc.yml"), awsManifest(b, "cloud-config.yml", "127.87.", sim)))
		manifest := writeFile(b, filepath.Join(work, "web.yml"), awsManifest(b, "web.yml", "127.87.", sim))
		benchDeploys(b, d, manifest, "127.87.1.10:8080")
	})
}

func benchDeploys(b *testing.B, d *director, manifest, lb string) {
	var cold, warm time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, total := range []*time.Duration{&cold, &warm} {
			start := time.Now()
			d.run(b, "-n", "-d", "web", "deploy", manifest)
			lbAnswers(b, lb, "v1", 2)
			*total += time.Since(start)
			b.StopTimer()
			d.run(b, "-n", "-d", "web", "delete-deployment")
			b.StartTimer()
		}
	}
	b.ReportMetric(cold.Seconds()/float64(b.N), "cold_s")
	b.ReportMetric(warm.Seconds()/float64(b.N), "warm_s")
}
