// wg_wait — main in wg.Wait() for a goroutine blocked in a read syscall on a pipe whose writer
// never writes.
//
// main.reader calls syscall.Read on a blocking pipe fd (not the netpoller): the goroutine is
// in a syscall and holds an OS thread. On SIGTERM main waits for it with wg.Wait(): forever.
//
// Expected: stalled; one application goroutine in status syscall, with an OS thread (its tid
// is a thread of the process), stack through main.readLine at blocking_line and main.reader;
// main.main in wg.Wait().
//
// `--ready`: print `blocking_line=N`, `pipe_fd=N` and `ready` once the reader is in the read.
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
func readLine(fd int, buf []byte) (int, error) {
	return syscall.Read(fd, buf) // blocks: nobody writes
}

//go:noinline
func reader(fd int, wg *sync.WaitGroup) {
	defer wg.Done()
	buf := make([]byte, 64)
	for {
		if n, err := readLine(fd, buf); err != nil || n == 0 {
			return
		}
	}
}

func main() {
	ready := len(os.Args) > 1 && os.Args[1] == "--ready"
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC); err != nil {
		panic(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go reader(fds[0], &wg)
	if ready {
		time.Sleep(200 * time.Millisecond)
		fmt.Printf("blocking_line=%d\npipe_fd=%d\nready\n", 25, fds[0])
	}
	<-term
	fmt.Fprintln(os.Stderr, "wg_wait: SIGTERM: waiting for the reader")
	wg.Wait() // never returns; fds[1] stays open, unwritten
}
