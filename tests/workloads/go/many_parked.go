// many_parked — a scale check for the goroutine reader: parks N goroutines (default 100000)
// on one channel receive, then prints `goroutines=N` and `ready` and waits for SIGTERM, on
// which it closes the channel and exits 0.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"
)

//go:noinline
func park(ch <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	<-ch
}

func main() {
	n := 100000
	if len(os.Args) > 2 {
		n, _ = strconv.Atoi(os.Args[2])
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	ch := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go park(ch, &wg)
	}
	time.Sleep(500 * time.Millisecond)
	fmt.Printf("goroutines=%d\nready\n", n)
	<-term
	close(ch)
	wg.Wait()
}
