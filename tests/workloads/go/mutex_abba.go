// mutex_abba — two goroutines in an AB-BA sync.Mutex deadlock.
//
// main.lockAB takes a then b, main.lockBA takes b then a; both hold their first lock when
// they reach the second, so each blocks in sync.(*Mutex).Lock forever. On SIGTERM main waits
// for them with wg.Wait(): forever.
//
// Expected: stalled; two application goroutines in sync.(*Mutex).Lock (wait reason
// "sync.Mutex.Lock" on Go 1.20+, "semacquire" before), with main.lockAB at ab_line and
// main.lockBA at ba_line.
//
// `--ready`: print `ab_line=N`, `ba_line=N` and `ready` once both are blocked.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

var a, b sync.Mutex

//go:noinline
func lockAB(held *sync.WaitGroup, wg *sync.WaitGroup) {
	defer wg.Done()
	a.Lock()
	held.Done()
	held.Wait()
	b.Lock() // ab_line: b is held by lockBA
}

//go:noinline
func lockBA(held *sync.WaitGroup, wg *sync.WaitGroup) {
	defer wg.Done()
	b.Lock()
	held.Done()
	held.Wait()
	a.Lock() // ba_line: a is held by lockAB
}

func main() {
	ready := len(os.Args) > 1 && os.Args[1] == "--ready"
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	var held, wg sync.WaitGroup
	held.Add(2)
	wg.Add(2)
	go lockAB(&held, &wg)
	go lockBA(&held, &wg)
	if ready {
		time.Sleep(200 * time.Millisecond)
		fmt.Printf("ab_line=%d\nba_line=%d\nready\n", 31, 40)
	}
	<-term
	fmt.Fprintln(os.Stderr, "mutex_abba: SIGTERM: waiting for the lockers")
	wg.Wait() // never returns
}
