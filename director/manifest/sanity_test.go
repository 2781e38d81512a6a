package manifest

import (
	"os"
	"testing"
)

func TestLocalExamples(t *testing.T) {
	t.Parallel()
	ccData, err := os.ReadFile("../../manifests/local/cloud-config.yml")
	if err != nil {
		t.Fatal(err)
	}
	cc, err := ParseCloudConfig("cloud-config.yml", ccData)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("../../manifests/local/web.yml")
	if err != nil {
		t.Fatal(err)
	}
	dep, err := ParseDeployment("web.yml", data)
	if err != nil {
		t.Fatal(err)
	}
	if err := dep.Validate(cc); err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", dep)
}
