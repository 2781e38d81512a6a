package local

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// releaseLoops detaches every loop device backed by the image file, as an
// agent that was killed before it could unmount its disk leaves them. A
// device still mounted somewhere is marked to detach itself when it is
// last unmounted. Without root there are no such devices to release.
func releaseLoops(image string) error {
	var img syscall.Stat_t
	if err := syscall.Stat(image, &img); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	devices, _ := filepath.Glob("/sys/block/loop*")
	var errs []error
	for _, d := range devices {
		dev := "/dev/" + filepath.Base(d)
		fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue // not ours to look at (no root), or gone
		}
		info, err := unix.IoctlLoopGetStatus64(fd)
		if err == nil && info.Device == uint64(img.Dev) && info.Inode == img.Ino {
			// On a device still in use the kernel sets autoclear instead.
			if err := unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0); err != nil && !errors.Is(err, unix.ENXIO) {
				errs = append(errs, fmt.Errorf("release %s (backed by %s): %w", dev, image, err))
			}
		}
		unix.Close(fd)
	}
	return errors.Join(errs...)
}
