package store

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// A cpi config holds cloud credentials: the state file, and so a backup of
// it, holds them only sealed with the variables key; a state file written
// before keeps them in clear until its next Open seals them.
func TestCPIConfigCredentialsAreSealedAtRest(t *testing.T) {
	const secret = "wJalrXUtnFEMI-cpi-secret"
	content := "cpis:\n- name: aws\n  type: aws\n  properties: {secret_access_key: " + secret + "}\n"
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// One written the old way, in clear, as a state file of before.
	if err := s.Update(func(tx *Tx) error {
		return tx.put(bucketConfigs, itob(99), storedConfig{Config: Config{ID: 99, Type: ConfigCPI, Name: "legacy", Content: content}})
	}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = Open(path, Options{}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Update(func(tx *Tx) error {
		if _, _, err := tx.AddConfig(ConfigCPI, "", content); err != nil {
			return err
		}
		_, _, err := tx.AddConfig(ConfigCloud, "", "azs: []\n")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var backup bytes.Buffer
	if _, err := s.Backup(&backup); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	if bytes.Contains(backup.Bytes(), []byte(secret)) || bytes.Contains(raw, []byte(secret)) {
		t.Fatal("a cloud credential is in the state file or its backup in clear")
	}
	if !bytes.Contains(backup.Bytes(), []byte("azs: []")) {
		t.Error("the cloud config is not in the backup")
	}
	s.View(func(tx *Tx) error {
		for _, name := range []string{"default", "legacy"} {
			c, err := tx.LatestConfig(ConfigCPI, name)
			if err != nil || c.Content != content {
				t.Errorf("cpi config %s read back: %q %v", name, c.Content, err)
			}
		}
		all, err := tx.Configs(ConfigCPI, false)
		if err != nil || len(all) != 2 || all[0].Content != content || all[1].Content != content {
			t.Errorf("configs: %+v %v", all, err)
		}
		// Storing the same content again is no change.
		if _, changed, err := tx.AddConfig(ConfigCPI, "", content); changed || err != nil {
			t.Errorf("same content: changed=%v %v", changed, err)
		}
		return nil
	})
}

// A deployment's provided links carry the properties its jobs expose on
// them, generated passwords included: they are sealed at rest, and read
// back whole.
func TestDeploymentLinksAreSealedAtRest(t *testing.T) {
	const secret = "link-password-8f3a"
	links := `[{"name":"db","type":"pg","shared":true,"properties":{"password":"` + secret + `"}}]`
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Update(func(tx *Tx) error {
		if err := tx.PutDeployment(Deployment{Name: "db", Links: []byte(links), ConsumedLinks: map[string]string{"other/x": "abc"}}); err != nil {
			return err
		}
		return tx.PutDeployment(Deployment{Name: "plain"})
	}); err != nil {
		t.Fatal(err)
	}
	var backup bytes.Buffer
	if _, err := s.Backup(&backup); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(backup.Bytes(), []byte(secret)) {
		t.Fatal("a link property is in the state file in clear")
	}
	s.View(func(tx *Tx) error {
		d, err := tx.Deployment("db")
		if err != nil || string(d.Links) != links || d.ConsumedLinks["other/x"] != "abc" {
			t.Errorf("deployment read back: %+v %v", d, err)
		}
		all, err := tx.Deployments()
		if err != nil || len(all) != 2 || string(all[0].Links) != links || all[1].Links != nil {
			t.Errorf("deployments read back: %+v %v", all, err)
		}
		return nil
	})
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}
