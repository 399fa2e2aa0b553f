// wolt-pause: the sandbox ("pause") process of a pod for containerd's CRI. It holds the pod's namespaces
// open by doing nothing: it waits for SIGINT or SIGTERM and exits 0, and, being PID 1 of the pod's PID
// namespace when that is shared, it reaps every child that exits (SIGCHLD) so no zombie piles up.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
