// chan_stuck — failure 3 in Go, at the goroutine level: a goroutine blocked sending on an
// unbuffered channel whose receiver returned, and main blocked in wg.Wait() after SIGTERM.
//
// main.produce sends results on an unbuffered channel; main.collect receives 3 and returns (a
// bug), so produce blocks in the channel send forever. main gets SIGTERM through
// signal.Notify, then waits for produce with wg.Wait(): forever. Goroutines blocked on channels
// do not block OS threads: every OS thread left is a Go runtime thread idling where it always
// idles (parked Ms in futex, the netpoller, sysmon).
//
// Expected after SIGTERM + grace: stalled (exit 1), no thread flagged, the idle runtime threads
// have role "runtime", and the summary says the stall is at the goroutine level.
//
// `--ready`: print `ready` on stdout once the collector has returned. Without it, nothing is
// printed on stdout.
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
func produce(results chan<- int, wg *sync.WaitGroup) {
	defer wg.Done()
	for i := 0; ; i++ {
		results <- i // nobody receives after the 3rd: blocks forever
	}
}

//go:noinline
func collect(results <-chan int, done chan<- struct{}) {
	for i := 0; i < 3; i++ {
		<-results
	}
	close(done) // returns early: the bug
}

func main() {
	ready := len(os.Args) > 1 && os.Args[1] == "--ready"
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)

	results := make(chan int)
	collected := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go produce(results, &wg)
	go collect(results, collected)
	if ready {
		<-collected
		time.Sleep(50 * time.Millisecond)
		fmt.Println("ready")
	}
	<-term
	fmt.Fprintln(os.Stderr, "chan_stuck: SIGTERM: waiting for the producer")
	wg.Wait() // never returns
}
