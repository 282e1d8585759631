// read_stuck — a goroutine blocked in a real blocking syscall: that OS thread is stuck.
//
// main.worker reads commands from a pipe with syscall.Read (a blocking fd, not the netpoller);
// nobody ever writes to the pipe, so the read never returns and holds its OS thread (an M in
// the read syscall). main gets SIGTERM through signal.Notify, then waits for the worker with
// wg.Wait(): forever.
//
// Expected after SIGTERM + grace: stalled (exit 1); flagged exactly one OS thread, role app,
// blocked in read on the pipe, stack through main.readCommand and main.worker. Every other OS
// thread is an idle Go runtime thread: role "runtime", not flagged.
//
// `--ready`: print `pipe_fd=N` and `ready` on stdout once the worker is in the read. Without
// it, nothing is printed on stdout.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

//go:noinline
func readCommand(fd int, buf []byte) (int, error) {
	return syscall.Read(fd, buf) // nobody writes: blocks this OS thread forever
}

//go:noinline
func worker(fd int, wg *sync.WaitGroup) {
	defer wg.Done()
	buf := make([]byte, 256)
	for {
		n, err := readCommand(fd, buf)
		if err != nil || n == 0 {
			return
		}
	}
}

func main() {
	ready := len(os.Args) > 1 && os.Args[1] == "--ready"
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)

	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC); err != nil { // blocking fds
		panic(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go worker(fds[0], &wg)
	if ready {
		time.Sleep(100 * time.Millisecond)
		fmt.Printf("pipe_fd=%d\nready\n", fds[0])
	}
	<-term
	fmt.Fprintln(os.Stderr, "read_stuck: SIGTERM: waiting for the worker")
	wg.Wait() // never returns; fds[1] stays open, unwritten
}
