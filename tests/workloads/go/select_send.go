// select_send — the classic goroutine leak behind a stuck shutdown: a worker loop
//
//	for { select { case <-ctx.Done(): return; case job := <-jobs: results <- process(job) } }
//
// whose send `results <- ...` blocks because nobody reads results any more (the collector
// took 2 results and returned). On SIGTERM main cancels ctx and waits with wg.Wait(): the
// worker never gets back to its select, so it never sees ctx.Done(), and the process stalls.
//
// Expected: stalled; at the goroutine level, main.worker blocked in "chan send" at
// blocking_line (results has cap 0, one sender waiting, no receiver), created by main.main at
// go_line; main.main in wg.Wait() (a semaphore wait).
//
// `--ready`: print the facts (`blocking_line=N`, `go_line=N`) and `ready` on stdout once the
// worker is blocked. Without it, nothing is printed on stdout.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"
	"time"
)

//go:noinline
func process(job int) int { return job * 2 }

//go:noinline
func worker(ctx context.Context, jobs <-chan int, results chan<- int, wg *sync.WaitGroup) {
	defer wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case job := <-jobs:
			results <- process(job) // blocks once nobody reads results
		}
	}
}

//go:noinline
func collect(results <-chan int, n int) {
	for i := 0; i < n; i++ {
		<-results
	}
}

func line() int { _, _, l, _ := runtime.Caller(1); return l }

func main() {
	ready := len(os.Args) > 1 && os.Args[1] == "--ready"
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)

	ctx, cancel := context.WithCancel(context.Background())
	jobs := make(chan int, 10)
	results := make(chan int)
	var wg sync.WaitGroup
	wg.Add(1)
	goLine := line() + 1
	go worker(ctx, jobs, results, &wg)
	for i := 0; i < 3; i++ {
		jobs <- i
	}
	collect(results, 2) // the third result is never read
	if ready {
		time.Sleep(100 * time.Millisecond)
		fmt.Printf("blocking_line=%d\ngo_line=%d\nready\n", 39, goLine)
	}
	<-term
	fmt.Fprintln(os.Stderr, "select_send: SIGTERM: cancelling and waiting for the worker")
	cancel()
	wg.Wait() // never returns: the worker is stuck in the send
}
