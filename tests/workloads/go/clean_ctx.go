// clean_ctx — the control: every goroutine watches ctx.Done() in every blocking select, so on
// SIGTERM main cancels ctx, everything returns and the process exits 0 quickly.
//
// Expected: not stalled (exit 0 within the grace period); before SIGTERM, the workers are in
// "select" waits whose cases include ctx.Done().
//
// `--ready`: print `workers=N` and `ready` once the workers wait.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

const workers = 4

//go:noinline
func worker(ctx context.Context, jobs <-chan int, results chan<- int, wg *sync.WaitGroup) {
	defer wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-jobs:
			select {
			case <-ctx.Done():
				return
			case results <- j * 2:
			}
		}
	}
}

func main() {
	ready := len(os.Args) > 1 && os.Args[1] == "--ready"
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(context.Background())
	jobs := make(chan int)
	results := make(chan int)
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go worker(ctx, jobs, results, &wg)
	}
	jobs <- 1 // one worker will wait to deliver its result
	if ready {
		time.Sleep(100 * time.Millisecond)
		fmt.Printf("workers=%d\nready\n", workers)
	}
	<-term
	cancel()
	wg.Wait()
	fmt.Fprintln(os.Stderr, "clean_ctx: SIGTERM: all workers returned")
}
