// Command nhi-pause is the node's pod sandbox program (what registry.k8s.io/pause does): it holds
// the pod's namespaces open, doing nothing, until it is told to stop.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	// As PID 1 of the pod, reap the children that may be re-parented to it.
	signal.Ignore(syscall.SIGCHLD)
	<-stop
}
