// pool_gone — 2,000 goroutines sending jobs to a worker pool that has exited.
//
// main.submit sends one job on the unbuffered jobs channel; the pool's workers returned after
// a few jobs (the bug), so 2,000 submitters block in "chan send" at the same line: one group.
// On SIGTERM main waits for them with wg.Wait(): forever.
//
// Expected: stalled; 2,000 application goroutines in main.submit at blocking_line, wait
// "chan send" on one channel (cap 0, 2,000 senders, no receiver), created by main.main at
// go_line.
//
// `--ready`: print `blocking_line=N`, `go_line=N`, `submitters=N` and `ready` once they block.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

const submitters = 2000

//go:noinline
func submit(jobs chan<- int, i int, wg *sync.WaitGroup) {
	defer wg.Done()
	jobs <- i // the pool is gone: blocks forever
}

//go:noinline
func worker(jobs <-chan int, done *sync.WaitGroup) {
	defer done.Done()
	<-jobs // takes one job and exits (the bug)
}

func main() {
	ready := len(os.Args) > 1 && os.Args[1] == "--ready"
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	jobs := make(chan int)
	var pool sync.WaitGroup
	for w := 0; w < 4; w++ {
		pool.Add(1)
		go worker(jobs, &pool)
	}
	var wg sync.WaitGroup
	for i := 0; i < submitters+4; i++ {
		wg.Add(1)
		go submit(jobs, i, &wg) // go_line
	}
	pool.Wait()
	if ready {
		time.Sleep(300 * time.Millisecond)
		fmt.Printf("blocking_line=%d\ngo_line=%d\nsubmitters=%d\nready\n", 28, 50, submitters)
	}
	<-term
	fmt.Fprintln(os.Stderr, "pool_gone: SIGTERM: waiting for the submitters")
	wg.Wait() // never returns
}
