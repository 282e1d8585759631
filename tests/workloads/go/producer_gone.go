// producer_gone — a producer blocked sending on a channel whose consumer returned.
//
// main.produce sends on a buffered channel (cap 4); main.consume takes 2 values and returns
// (the bug), so once the buffer is full produce blocks in "chan send" forever. On SIGTERM main
// waits for the producer with wg.Wait(): forever.
//
// Expected: stalled; main.produce blocked in "chan send" at blocking_line on a channel with
// cap 4, len 4, one sender and no receiver; created by main.main at go_line.
//
// `--ready`: print `blocking_line=N`, `go_line=N` and `ready` once the producer is blocked.
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
func produce(out chan<- int, wg *sync.WaitGroup) {
	defer wg.Done()
	for i := 0; ; i++ {
		out <- i // blocks once the buffer is full and nobody consumes
	}
}

//go:noinline
func consume(in <-chan int) {
	<-in
	<-in
}

func main() {
	ready := len(os.Args) > 1 && os.Args[1] == "--ready"
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	ch := make(chan int, 4)
	var wg sync.WaitGroup
	wg.Add(1)
	go produce(ch, &wg) // go_line
	consume(ch)
	if ready {
		time.Sleep(100 * time.Millisecond)
		fmt.Printf("blocking_line=%d\ngo_line=%d\nready\n", 26, 43)
	}
	<-term
	fmt.Fprintln(os.Stderr, "producer_gone: SIGTERM: waiting for the producer")
	wg.Wait() // never returns
}
