package app

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"syscall"
)

// jobUser is the user the jobs' processes run as: name (BOSH's vcap by
// default), made as a system user with its own group and no login when it
// does not exist. An agent that is not root runs them as itself, and so
// does name "root" or "".
func jobUser(name string, logger *slog.Logger) (*syscall.Credential, error) {
	if os.Geteuid() != 0 || name == "" || name == "root" {
		return nil, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		// Agents starting together may race to make it: look again after.
		out, aerr := exec.Command("useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput()
		if u, err = user.Lookup(name); err != nil {
			return nil, fmt.Errorf("job user %s: not found, and useradd: %v %s", name, aerr, out)
		}
		logger.Info("made the job user", "user", name, "uid", u.Uid)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("job user %s: uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("job user %s: gid %q: %w", name, u.Gid, err)
	}
	if uid == 0 {
		return nil, fmt.Errorf("job user %s: uid 0 is root", name)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}
